package callengine

import (
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	bigSDP := `"v=0` + strings.Repeat("x", MaxSDPBytes) + `"`
	cases := []struct {
		name, typ, content string
		wantErr            error
		check              func(t *testing.T, v any)
	}{
		{name: "invite, numeric version", typ: TypeInvite,
			content: `{"call_id":"c1","party_id":"P","version":1,"lifetime":60000,"offer":{"type":"offer","sdp":"v=0\r\n"},"org.matrix.msc3077.sdp_stream_metadata":{"s":{"purpose":"m.usermedia"}}}`,
			check: func(t *testing.T, v any) {
				inv := v.(*Invite)
				if inv.Version != "1" || inv.Lifetime != 60000 || inv.MetadataUnstable["s"].Purpose != StreamPurposeUserMedia {
					t.Errorf("%+v", inv)
				}
			}},
		{name: "answer with unstable metadata only (famedly)", typ: TypeAnswer,
			content: `{"call_id":"c1","party_id":"P","version":"1","answer":{"type":"answer","sdp":"v=0\r\n"},"org.matrix.msc3077.sdp_stream_metadata":{"x":{"purpose":"m.usermedia","video_muted":true}}}`,
			check: func(t *testing.T, v any) {
				if md := v.(*Answer).StreamMetadata(); !md["x"].VideoMuted {
					t.Errorf("metadata %+v", md)
				}
			}},
		{name: "version 0", typ: TypeHangup, content: `{"call_id":"c","version":0}`,
			check: func(t *testing.T, v any) {
				if !v.(*Hangup).Version.IsV0() {
					t.Error("not v0")
				}
			}},
		{name: "hangup without reason", typ: TypeHangup, content: `{"call_id":"c","party_id":"p","version":"1"}`},
		{name: "end of candidates", typ: TypeCandidates, content: `{"call_id":"c","party_id":"p","version":"1","candidates":[{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"},{"candidate":""}]}`,
			check: func(t *testing.T, v any) {
				c := v.(*Candidates).Candidates
				if len(c) != 2 || !c[1].IsEnd() || *c[0].SDPMid != "0" {
					t.Errorf("%+v", c)
				}
			}},
		{name: "missing call_id", typ: TypeAnswer, content: `{"answer":{"type":"answer","sdp":"v=0"}}`, wantErr: ErrMalformed},
		{name: "call_id of wrong type", typ: TypeHangup, content: `{"call_id":7}`, wantErr: ErrMalformed},
		{name: "version object", typ: TypeHangup, content: `{"call_id":"c","version":{}}`, wantErr: ErrMalformed},
		{name: "answer typed offer", typ: TypeAnswer, content: `{"call_id":"c","answer":{"type":"offer","sdp":"v=0"}}`, wantErr: ErrMalformed},
		{name: "answer without sdp", typ: TypeAnswer, content: `{"call_id":"c","answer":{"type":"answer"}}`, wantErr: ErrMalformed},
		{name: "huge sdp", typ: TypeAnswer, content: `{"call_id":"c","answer":{"type":"answer","sdp":` + bigSDP + `}}`, wantErr: ErrMalformed},
		{name: "not sdp", typ: TypeInvite, content: `{"call_id":"c","lifetime":1,"offer":{"type":"offer","sdp":"hello"}}`, wantErr: ErrMalformed},
		{name: "negative lifetime", typ: TypeInvite, content: `{"call_id":"c","lifetime":-1,"offer":{"type":"offer","sdp":"v=0"}}`, wantErr: ErrMalformed},
		{name: "candidate injecting lines", typ: TypeCandidates, content: `{"call_id":"c","candidates":[{"candidate":"candidate:1\r\na=evil"}]}`, wantErr: ErrMalformed},
		{name: "too many candidates", typ: TypeCandidates, content: `{"call_id":"c","candidates":[` + strings.Repeat(`{"candidate":"x"},`, MaxCandidates) + `{"candidate":""}]}`, wantErr: ErrMalformed},
		{name: "select_answer without party", typ: TypeSelectAnswer, content: `{"call_id":"c"}`, wantErr: ErrMalformed},
		{name: "not json", typ: TypeReject, content: `{"call_id":`, wantErr: ErrMalformed},
		{name: "array", typ: TypeReject, content: `[]`, wantErr: ErrMalformed},
		{name: "unknown type", typ: "m.call.transfer", content: `{}`, wantErr: ErrUnknownType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Decode(tc.typ, []byte(tc.content))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, v)
			}
		})
	}
}

// FuzzDecode: untrusted content never panics, and whatever decodes passes
// the limits the machine relies on.
func FuzzDecode(f *testing.F) {
	types := []string{TypeInvite, TypeAnswer, TypeCandidates, TypeSelectAnswer, TypeHangup, TypeReject, TypeNegotiate}
	f.Add(uint8(0), []byte(`{"call_id":"c1","party_id":"P","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0\r\n"}}`))
	f.Add(uint8(2), []byte(`{"call_id":"c","candidates":[{"candidate":""}]}`))
	f.Add(uint8(4), []byte(`{"call_id":"c","version":0,"reason":"ice_failed"}`))
	f.Fuzz(func(t *testing.T, ti uint8, content []byte) {
		v, err := Decode(types[int(ti)%len(types)], content)
		if err != nil {
			if v != nil {
				t.Fatal("value with error")
			}
			return
		}
		switch x := v.(type) {
		case *Invite:
			if x.CallID == "" || len(x.Offer.SDP) > MaxSDPBytes {
				t.Fatalf("%+v", x)
			}
		case *Candidates:
			if len(x.Candidates) > MaxCandidates {
				t.Fatal("too many candidates")
			}
		}
	})
}
