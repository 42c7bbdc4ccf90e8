package group

import (
	"encoding/json"
	"fmt"
	"time"
)

// TypeRTCNotification is the MSC4075 ring for MatrixRTC calls, in the
// flat shape js-sdk, Element Call and dart-sdk send and parse today
// (matrix-voip.md §4.7).
const TypeRTCNotification = "org.matrix.msc4075.rtc.notification"

// Notification types and limits (MSC4075; js-sdk
// parseCallNotificationContent caps lifetime at 90 s, dart-sdk at 2 min).
const (
	NotificationRing      = "ring"
	NotificationNotify    = "notification"
	MaxNotifyLifetime     = 90 * time.Second
	DefaultNotifyLifetime = 30 * time.Second
	// NotifyClockSkew: receivers use origin_server_ts instead of sender_ts
	// when the two differ by more than this (MSC4075, 2025-08).
	NotifyClockSkew = 20 * time.Second
)

// Mentions is m.mentions (Matrix spec, "User and room mentions").
type Mentions struct {
	UserIDs []string `json:"user_ids"`
	Room    bool     `json:"room"`
}

// Relation is an m.reference relation.
type Relation struct {
	RelType string `json:"rel_type"`
	EventID string `json:"event_id"`
}

// Notification is the content of org.matrix.msc4075.rtc.notification.
type Notification struct {
	Mentions         Mentions  `json:"m.mentions"`
	NotificationType string    `json:"notification_type"`
	RelatesTo        *Relation `json:"m.relates_to,omitempty"`
	SenderTS         int64     `json:"sender_ts"`
	Lifetime         int64     `json:"lifetime"`
	Intent           string    `json:"m.call.intent,omitempty"`
	// SlotID names the MatrixRTC slot rung (MSC4143, "m.call#ROOM");
	// js-sdk 43 derives it from the relation when absent.
	SlotID string `json:"slot_id,omitempty"`
}

// NewRing is the ring the intercom sends after its membership: it
// mentions the whole room so every household device rings, relates to the
// membership event when its ID is known, and lasts the ring timeout
// (capped at MaxNotifyLifetime).
func NewRing(membershipEvent string, now time.Time, lifetime time.Duration) Notification {
	n := Notification{
		Mentions:         Mentions{UserIDs: []string{}, Room: true},
		NotificationType: NotificationRing,
		SenderTS:         now.UnixMilli(),
		Lifetime:         min(lifetime, MaxNotifyLifetime).Milliseconds(),
		Intent:           "video",
	}
	if membershipEvent != "" {
		n.RelatesTo = &Relation{RelType: "m.reference", EventID: membershipEvent}
	}
	return n
}

// DecodeNotification parses a notification like js-sdk's
// parseCallNotificationContent: notification_type, numeric sender_ts and
// lifetime are required, a relation must be m.reference, and the lifetime
// is capped.
func DecodeNotification(content []byte) (Notification, error) {
	var n Notification
	var probe struct {
		Type     *string  `json:"notification_type"`
		SenderTS *float64 `json:"sender_ts"`
		Lifetime *float64 `json:"lifetime"`
	}
	if err := json.Unmarshal(content, &probe); err != nil {
		return n, fmt.Errorf("%w: notification: %v", ErrMalformed, err)
	}
	if probe.Type == nil || probe.SenderTS == nil || probe.Lifetime == nil {
		return n, fmt.Errorf("%w: notification needs notification_type, sender_ts and lifetime", ErrMalformed)
	}
	if err := json.Unmarshal(content, &n); err != nil {
		return n, fmt.Errorf("%w: notification: %v", ErrMalformed, err)
	}
	if n.RelatesTo != nil && n.RelatesTo.RelType != "m.reference" {
		return n, fmt.Errorf("%w: notification relation %q is not m.reference", ErrMalformed, n.RelatesTo.RelType)
	}
	if n.Lifetime < 0 {
		return n, fmt.Errorf("%w: negative lifetime", ErrMalformed)
	}
	n.Lifetime = min(n.Lifetime, MaxNotifyLifetime.Milliseconds())
	return n, nil
}
