// Package webpage runs any web page in headless Chromium for a Go test
// (driver.mjs): the test opens a URL, clicks and fills like a person,
// evaluates JavaScript in the page and reads the events the page emits
// (window.webpageEmit). It is how the intercom's own web page and the
// WHEP endpoint's hand-written browser client are tested. It borrows the
// resident harness's npm packages (playwright-core) and the node-driver
// plumbing of nodeproc.
package webpage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"

	"github.com/doorbell/intercom/internal/testenv/nodeproc"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// ErrNoSource is returned when driver.mjs cannot be found beside this file.
var ErrNoSource = errors.New("webpage: driver.mjs not found")

// Options describe one browser.
type Options struct {
	URL string // the first page; "" opens none
	// Resolve is Chromium's --host-resolver-rules, e.g. "MAP evil.test
	// 127.0.0.1": a name for the API that it does not know as its own.
	Resolve string
	Log     io.Writer // the driver's diagnostics and the page's console
}

// Page is one Chromium with one tab.
type Page struct {
	proc *nodeproc.Proc
}

// Start installs the npm packages if needed (resident.Setup) and starts
// Chromium on opts.URL. ctx bounds the start only.
func Start(ctx context.Context, opts Options) (*Page, error) {
	res, err := resident.Setup(ctx)
	if err != nil {
		return nil, err
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, ErrNoSource
	}
	args := []string{}
	if opts.URL != "" {
		args = append(args, "--url", opts.URL)
	}
	if opts.Resolve != "" {
		args = append(args, "--resolve", opts.Resolve)
	}
	proc, _, err := nodeproc.Start(ctx, nodeproc.Options{
		Name: "webpage", Dir: filepath.Dir(file), Args: args, Log: opts.Log,
		Env: []string{"WEBPAGE_PLAYWRIGHT=" + filepath.Join(res, "node_modules", "playwright-core", "index.mjs")},
	})
	if err != nil {
		return nil, fmt.Errorf("start chromium: %w", err)
	}
	return &Page{proc: proc}, nil
}

// Close closes Chromium.
func (p *Page) Close() error { return p.proc.Close() }

func (p *Page) do(ctx context.Context, cmd string, args map[string]any) (json.RawMessage, error) {
	ev, err := p.proc.Do(ctx, map[string]any{"cmd": cmd, "args": args})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	var r struct {
		Result json.RawMessage `json:"result"`
	}
	if err := ev.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: decode reply: %w", cmd, err)
	}
	return r.Result, nil
}

// Goto navigates to url and returns the HTTP status of the document.
func (p *Page) Goto(ctx context.Context, url string) (int, error) {
	raw, err := p.do(ctx, "goto", map[string]any{"url": url})
	if err != nil {
		return 0, err
	}
	var r struct{ Status int }
	err = json.Unmarshal(raw, &r)
	return r.Status, err
}

// Eval runs js, the body of an async function, in the page and decodes
// what it returns into out (which may be nil).
func (p *Page) Eval(ctx context.Context, js string, out any) error {
	raw, err := p.do(ctx, "eval", map[string]any{"js": js})
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// Click clicks the element selector names, as a person would: it must be
// visible and enabled.
func (p *Page) Click(ctx context.Context, selector string) error {
	_, err := p.do(ctx, "click", map[string]any{"selector": selector})
	return err
}

// Fill types value into the input selector names.
func (p *Page) Fill(ctx context.Context, selector, value string) error {
	_, err := p.do(ctx, "fill", map[string]any{"selector": selector, "value": value})
	return err
}

// Text returns the text content of the element selector names.
func (p *Page) Text(ctx context.Context, selector string) (string, error) {
	raw, err := p.do(ctx, "text", map[string]any{"selector": selector})
	if err != nil {
		return "", err
	}
	var s string
	err = json.Unmarshal(raw, &s)
	return s, err
}

// WaitFor returns the page's next event called name (window.webpageEmit).
func (p *Page) WaitFor(ctx context.Context, name string) (nodeproc.Event, error) {
	return p.proc.WaitFor(ctx, name)
}
