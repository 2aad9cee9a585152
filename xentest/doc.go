// Package xentest holds the end-to-end tests that run dmlaunch under a real
// Xen: scripts/xenlab boots Xen 4.17 with a Debian 12 dom0 inside QEMU, and
// libxl starts every device model through the installed dmlaunch. The tests
// carry the build tag xenlab, so that "go test ./..." stays quick; run them
// with "make xen-test", which boots the lab first.
package xentest
