module github.com/dmlaunch/dmlaunch

go 1.26.0

require (
	github.com/creack/pty v1.1.24
	github.com/go-delve/liner v1.2.2-1
	github.com/mattn/go-runewidth v0.0.3
	github.com/spf13/pflag v1.0.10
	github.com/stretchr/testify v1.12.1
	golang.org/x/sys v0.49.0
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect
