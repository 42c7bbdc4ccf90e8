// Command devserver runs the test homeserver on its own, for trying a client
// against it by hand: Dendrite on a fixed port with a persistent data
// directory and the given users. (`make demo` does not use it: cmd/demo
// starts its own Dendrite next to the intercom and the resident page.) It prints
// one JSON object on stdout once the users exist,
//
//	{"base_url":"http://127.0.0.1:8008","server_name":"localhost",
//	 "users":[{"user_id":"@door:localhost","access_token":"…","device_id":"…"}]}
//
// and runs until SIGINT or SIGTERM, then stops Dendrite. Users are
// idempotent: one that already exists is logged in with its password.
//
//	go run ./cmd/devserver -user door:doorbell1 -user resident:resident1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

type userFlags []string

func (u *userFlags) String() string { return strings.Join(*u, ",") }

func (u *userFlags) Set(v string) error {
	name, pass, ok := strings.Cut(v, ":")
	if !ok || name == "" || pass == "" {
		return errors.New("want name:password")
	}
	*u = append(*u, v)
	return nil
}

type output struct {
	BaseURL    string       `json:"base_url"`
	ServerName string       `json:"server_name"`
	Users      []outputUser `json:"users"`
}

type outputUser struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

func main() {
	var users userFlags
	port := flag.Int("port", 8008, "port on 127.0.0.1")
	dir := flag.String("dir", defaultDir(), "data directory (kept across runs)")
	serverName := flag.String("server-name", "localhost", "server name: the domain of user IDs")
	turnURI := flag.String("turn-uri", "", "TURN URI handed to clients (needs -turn-secret)")
	turnSecret := flag.String("turn-secret", "", "secret shared with the TURN server")
	flag.Var(&users, "user", "name:password of a user to create (repeatable; passwords need 8+ characters)")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(logger, *port, *dir, *serverName, *turnURI, *turnSecret, users); err != nil {
		logger.Error("devserver failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger, port int, dir, serverName, turnURI, turnSecret string, users []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := dendrite.Options{Dir: dir, Port: port, ServerName: serverName, Logger: logger}
	if turnURI != "" || turnSecret != "" {
		if turnURI == "" || turnSecret == "" {
			return errors.New("-turn-uri and -turn-secret go together")
		}
		opts.TURN = &dendrite.TURN{URIs: []string{turnURI}, SharedSecret: turnSecret}
	}
	srv, err := dendrite.Start(ctx, opts)
	if err != nil {
		return err
	}
	out := output{BaseURL: srv.BaseURL, ServerName: srv.ServerName, Users: []outputUser{}}
	for _, u := range users {
		name, pass, _ := strings.Cut(u, ":")
		user, err := srv.EnsureUser(ctx, name, pass)
		if err != nil {
			return errors.Join(err, srv.Stop())
		}
		out.Users = append(out.Users, outputUser{UserID: user.UserID, AccessToken: user.AccessToken, DeviceID: user.DeviceID})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return errors.Join(err, srv.Stop())
	}
	logger.Info("homeserver ready; stop with Ctrl-C", "url", srv.BaseURL, "log", srv.LogPath())

	select {
	case <-ctx.Done():
		return srv.Stop()
	case <-srv.Exited():
		return fmt.Errorf("%w; last lines of %s:\n%s", srv.Stop(), srv.LogPath(), srv.LogTail(30))
	}
}

// defaultDir keeps the demo's homeserver data outside the repository.
func defaultDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "intercom", "devserver")
}
