package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/dmlaunch/dmlaunch/domid"
	"github.com/dmlaunch/dmlaunch/launcher"
	"github.com/spf13/pflag"
)

func allocator(e *env) *domid.Allocator {
	a := launcher.NewAllocator(e.stateDir, os.LookupEnv)
	a.Warn = func(msg string) { fmt.Fprintf(e.stderr, "dmctl: %s\n", msg) }
	return a
}

func init() {
	register(&command{
		name:  "domid",
		args:  "alloc [--name NAME] | release DOMID [--force] | ls [--json]",
		short: "manage domid leases",
		long: `alloc     lease a free guest domid and print it; it stays leased until released
release   free a domid leased by hand, or one whose holder is gone; a domid
          whose holder still runs is refused unless --force is given
ls        list leases and recently freed domids that are still cooling down
          (reads only: nothing is created or changed)

Leases live in <state dir>/domids, changed under a lock. A freed domid is
not handed out again for LIBXL_DOMID_REUSE_TIMEOUT seconds (default 60), and
domids in libxl's /var/run/xen/domid-history are skipped likewise. A lease
file that is damaged or missing is rebuilt by the next launch from the
registry records of live launches (the damaged file is kept as
domids.damaged.<time>); ls shows the rebuilt view and says so.`,
		example: "  dmctl domid alloc --name test-vm\n  dmctl domid ls\n  dmctl domid release 5",
		flags: func(fs *pflag.FlagSet) {
			fs.String("name", "", "alloc: a `NAME` to record with the lease")
			fs.Bool("json", false, "ls: print JSON")
			fs.Bool("force", false, "release: free the domid even though its holder still runs")
		},
		run: runDomid,
	})
}

func runDomid(e *env, fs *pflag.FlagSet, args []string) error {
	if len(args) == 0 {
		return usagef("needs alloc, release or ls")
	}
	a := allocator(e)
	switch args[0] {
	case "alloc":
		if len(args) != 1 {
			return usagef("alloc takes no arguments")
		}
		name, _ := fs.GetString("name")
		l, err := a.Acquire(domid.Request{Domid: -1, Kind: "manual", Name: name})
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, l.Domid)
		return nil
	case "release":
		if len(args) != 2 {
			return usagef("release needs one DOMID")
		}
		d, err := domid.Parse(domid.Candidate{Source: "argument", Value: args[1]})
		if err != nil {
			return usagef("%v", err)
		}
		force, _ := fs.GetBool("force")
		return a.Free(d, force)
	case "ls":
		if len(args) != 1 {
			return usagef("ls takes no arguments")
		}
		st, err := a.List()
		if err != nil {
			return err
		}
		if st.Damage != "" {
			fmt.Fprintf(e.stderr, "dmctl domid ls: %s\n", cell(st.Damage))
		}
		if j, _ := fs.GetBool("json"); j {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		var t table
		t.add("DOMID", "STATE", "KIND", "NAME", "HOLDER", "SINCE")
		for _, l := range st.Leases {
			holder := "by hand"
			if l.Holder.PID != 0 {
				holder = "pid " + strconv.Itoa(l.Holder.PID)
			}
			state := "given"
			if l.Allocated {
				state = "leased"
			}
			t.add(strconv.Itoa(l.Domid), state, l.Kind, dash(l.Name), holder, l.Since.Local().Format(time.DateTime))
		}
		for _, r := range st.Released {
			if left := a.CoolingUntil(r); left > 0 {
				t.add(strconv.Itoa(r.Domid), fmt.Sprintf("cooling (%ds left)", int(left.Seconds()+0.5)), "-", "-", "-", "-")
			}
		}
		return t.write(e.stdout)
	}
	return usagef("unknown domid action %q; use alloc, release or ls", args[0])
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
