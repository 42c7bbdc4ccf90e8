// Command intercom is the Matrix video-intercom daemon and its installer
// tools.
//
//	intercom run --config FILE           run the intercom
//	intercom check-config --config FILE  validate a config file; exit 1 on any problem
//	intercom provision --config FILE     first login and the residents' rooms
//	intercom relay-off --config FILE     drive the door relay off (ExecStopPost)
//	intercom hwtest --config FILE        walk an installer through the hardware
//	intercom version                     print the version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/doorbell/intercom/daemon"
)

// version is set at link time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: intercom <command> [flags]

commands:
  run --config FILE            run the intercom
  check-config --config FILE   check a config file and list every problem
  provision --config FILE      log in, create or repair the residents' rooms, cross-sign the
                               intercom's device, print a summary
                               (--print-recovery-key: print a new identity's recovery key
                               instead of keeping it in state_dir)
  relay-off --config FILE      drive the door relay off (systemd ExecStopPost)
  hwtest --config FILE [--yes] test camera, microphone, speaker, ringer, relay and button
  version                      print the version
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "intercom", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	case "check-config":
		path, ok := configFlag(cmd, args, stderr)
		if !ok {
			return 2
		}
		return checkConfig(path, stdout, stderr)
	case "relay-off":
		path, ok := configFlag(cmd, args, stderr)
		if !ok {
			return 2
		}
		return daemon.RelayOff(path, stdout, stderr)
	case "provision":
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "/etc/intercom/intercom.yaml", "config file")
		printKey := fs.Bool("print-recovery-key", false, "print a new identity's recovery key once instead of keeping it in state_dir")
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "intercom %s: unexpected argument %q\n", cmd, fs.Arg(0))
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		code := daemon.Provision(ctx, *path, *printKey, stdout, stderr)
		if code == 0 {
			// Now logged in: /rtc/transports can be asked.
			printRTCTransport(ctx, *path, stdout)
		}
		return code
	case "hwtest":
		fs := flag.NewFlagSet("hwtest", flag.ContinueOnError)
		fs.SetOutput(stderr)
		var o daemon.HWTestOptions
		fs.StringVar(&o.Config, "config", "/etc/intercom/intercom.yaml", "config file")
		fs.BoolVar(&o.Yes, "yes", false, "do not ask: pulse the relay and take every part as seen/heard")
		fs.StringVar(&o.Snapshot, "snapshot", "hwtest-snapshot.jpg", "file the camera's picture is saved to")
		fs.DurationVar(&o.ButtonWait, "button-wait", 30*time.Second, "how long to wait for a button press")
		if err := fs.Parse(args); err != nil {
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return daemon.HWTest(ctx, o, os.Stdin, stdout, stderr)
	case "run":
		path, ok := configFlag(cmd, args, stderr)
		if !ok {
			return 2
		}
		cfg, code := daemon.LoadConfig(path, stderr)
		if cfg == nil {
			return code
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		serveProfiles(ctx, stderr)
		if err := daemon.Run(ctx, cfg, version, stderr); err != nil {
			fmt.Fprintln(stderr, "intercom:", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "intercom: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
}

func configFlag(cmd string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/intercom/intercom.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "intercom %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return "", false
	}
	return *path, true
}

func checkConfig(path string, stdout, stderr io.Writer) int {
	cfg, code := daemon.LoadConfig(path, stderr)
	if cfg == nil {
		return code
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "%s: ok\n%s\n%s\n", path, cfg, cfg.DescribeMQTT())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if line := daemon.DescribeRTCTransport(ctx, cfg); line != "" {
		fmt.Fprintln(stdout, line)
	}
	return 0
}

// printRTCTransport says which MatrixRTC transport the intercom will use,
// after provision (which has loaded and checked the configuration).
func printRTCTransport(ctx context.Context, path string, stdout io.Writer) {
	cfg, _ := daemon.LoadConfig(path, io.Discard)
	if cfg == nil {
		return
	}
	if line := daemon.DescribeRTCTransport(ctx, cfg); line != "" {
		fmt.Fprintln(stdout, line)
	}
}
