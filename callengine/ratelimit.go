package callengine

import "time"

// RateLimit is a token bucket: Burst events at once, then one every
// Every.
type RateLimit struct {
	Burst int
	Every time.Duration
}

// DefaultRejectLimit bounds the m.call.reject answers one sender can earn
// (Config.RejectLimit): five at once, then one every 12 s. A person
// calling again by hand stays well within it; a script flooding invites
// gets five rejects and then silence until its invites expire.
var DefaultRejectLimit = RateLimit{Burst: 5, Every: 12 * time.Second}

// maxBuckets bounds the senders a senderBuckets remembers.
const maxBuckets = 256

// senderBuckets is a token bucket per sender. It is pure: time comes in
// as an argument.
type senderBuckets struct {
	limit   RateLimit
	buckets map[UserID]bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// allow takes a token from who's bucket at now, if there is one. When
// maxBuckets senders are remembered, full buckets are forgotten (they
// are as good as new); if none is full, a new sender is refused: a reject
// not sent is harmless, memory without bound is not.
func (s *senderBuckets) allow(now time.Time, who UserID) bool {
	if s.limit.Burst <= 0 || s.limit.Every <= 0 {
		s.limit = DefaultRejectLimit
	}
	if s.buckets == nil {
		s.buckets = map[UserID]bucket{}
	}
	b, ok := s.buckets[who]
	if !ok {
		if len(s.buckets) >= maxBuckets {
			for u, ub := range s.buckets {
				if s.fill(ub, now).tokens >= float64(s.limit.Burst) {
					delete(s.buckets, u)
				}
			}
			if len(s.buckets) >= maxBuckets {
				return false
			}
		}
		b = bucket{tokens: float64(s.limit.Burst), at: now}
	}
	b = s.fill(b, now)
	if b.tokens < 1 {
		s.buckets[who] = b
		return false
	}
	b.tokens--
	s.buckets[who] = b
	return true
}

// fill adds the tokens earned since b.at, up to Burst. A clock that went
// back earns nothing.
func (s *senderBuckets) fill(b bucket, now time.Time) bucket {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(s.limit.Burst), b.tokens+float64(d)/float64(s.limit.Every))
		b.at = now
	}
	return b
}
