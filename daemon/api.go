package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/device/webui"
	"github.com/doorbell/intercom/device/whep"
	mwebrtc "github.com/doorbell/intercom/media/webrtc"
	"github.com/doorbell/intercom/provisioning"
)

// apiHandler puts the local API behind its guard (device.Guard, issue 19
// finding 7) with the api section's token and names. The guard is told
// the port actually bound, as api.listen may ask for port 0.
//
// The web page's session (page.Authorize: cookie and CSRF token) stands in
// for the token, and what the page needs before its login is public
// (page.Public); page may be nil.
func apiHandler(cfg provisioning.API, bound net.Addr, api http.Handler, page *webui.UI, log *slog.Logger) (http.Handler, error) {
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("api listen %q: %w", cfg.Listen, err)
	}
	_, port, err := net.SplitHostPort(bound.String())
	if err != nil {
		return nil, fmt.Errorf("api bound to %q: %w", bound, err)
	}
	gc := device.GuardConfig{Listen: net.JoinHostPort(host, port), Hostnames: cfg.Hostnames, Token: cfg.Token, Logger: log}
	if page != nil {
		gc.Session, gc.Public = page.Authorize, page.Public
	}
	return device.Guard(api, gc)
}

// whepPeers makes the WHEP endpoint's viewers with the calls' peer
// factory, so that they send the calls' tracks; offers media/webrtc
// cannot answer are the client's fault (400) for whep.
type whepPeers struct{ f *mwebrtc.PeerFactory }

func (w whepPeers) AcceptViewer(ctx context.Context, offer string, sink func(callengine.PeerEvent)) (callengine.Peer, string, error) {
	p, answer, err := w.f.AcceptViewer(ctx, offer, sink)
	if errors.Is(err, mwebrtc.ErrBadOffer) {
		err = fmt.Errorf("%w: %w", whep.ErrBadOffer, err)
	}
	return p, answer, err
}
