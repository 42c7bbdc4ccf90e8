package resident

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/doorbell/intercom/internal/testenv/nodeproc"
)

// RTCJoinOptions are the arguments of RTCJoinWith.
type RTCJoinOptions struct {
	RoomID string
	// ServiceURL is the LiveKit JWT service (livekit_service_url) to get
	// the LiveKit token from with POST <ServiceURL>/sfu/get. Empty: the one
	// in the foci_preferred of the oldest other member of the room's call.
	ServiceURL string
	// Notify, "ring" or "notification", makes the page send an
	// org.matrix.msc4075.rtc.notification once its membership is in, as
	// the first member of a call does.
	Notify string
	// NoVideo publishes the microphone only (by default the fake camera
	// too) and sets m.call.intent "audio".
	NoVideo bool
	// GetToken asks the service's POST /get_token (member ID: the
	// membershipID js-sdk writes, "<user>:<device>") instead of /sfu/get,
	// so the page is at the SFU under the hashed identity.
	GetToken bool
}

// RTCJoin joins the MatrixRTC call in roomID as Element Call does: a
// per-device org.matrix.msc3401.call.member state event naming serviceURL
// as its LiveKit transport (no delayed leave event where the homeserver has
// none), a LiveKit token from serviceURL's /sfu/get for an OpenID token, a
// livekit-client connection that publishes Chromium's fake microphone and
// camera and subscribes to every track. It returns the EventRTCJoined
// event, once connected, published and the membership is back from sync.
// EventRTCTrack, EventRTCFirstFrame and EventRTCStats follow.
func (r *Resident) RTCJoin(ctx context.Context, roomID, serviceURL string) (Event, error) {
	return r.RTCJoinWith(ctx, RTCJoinOptions{RoomID: roomID, ServiceURL: serviceURL})
}

// RTCJoinWith is RTCJoin with options.
func (r *Resident) RTCJoinWith(ctx context.Context, o RTCJoinOptions) (Event, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	args := map[string]any{"roomId": o.RoomID, "video": !o.NoVideo}
	if o.ServiceURL != "" {
		args["serviceUrl"] = o.ServiceURL
	}
	if o.Notify != "" {
		args["notify"] = o.Notify
	}
	if o.GetToken {
		args["getToken"] = true
	}
	reply, err := r.Do(ctx, "rtcJoin", map[string]any{"args": args})
	if err != nil {
		return Event{}, err
	}
	// The reply's result holds what the rtcJoined event carries.
	result, _ := reply.Fields["result"].(map[string]any)
	fields := map[string]any{"event": EventRTCJoined, "ts": float64(reply.TS.UnixMilli())}
	for k, v := range result {
		fields[k] = v
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return Event{}, fmt.Errorf("resident rtcJoin: %w", err)
	}
	return nodeproc.ParseEvent(raw)
}

// RTCDecline declines a MatrixRTC ring: an org.matrix.msc4310.rtc.decline
// referencing the notification event.
func (r *Resident) RTCDecline(ctx context.Context, roomID, notificationEventID string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	_, err := r.Do(ctx, "rtcDecline", map[string]any{"args": map[string]any{"roomId": roomID, "notificationEventId": notificationEventID}})
	return err
}

// RTCLeave disconnects from LiveKit and leaves the MatrixRTC call in roomID
// (the membership state event becomes {}); EventRTCLeft follows.
func (r *Resident) RTCLeave(ctx context.Context, roomID string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	_, err := r.Do(ctx, "rtcLeave", map[string]any{"args": map[string]any{"roomId": roomID}})
	return err
}

// withDefaultTimeout bounds ctx by commandTimeout unless it has a deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, commandTimeout)
}
