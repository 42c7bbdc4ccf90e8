package provisioning

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

const (
	testPassword      = "hunter2-do-not-print"
	testToken         = "syt_do_not_print"
	testLiveKitKey    = "APIkey-do-not-print"
	testLiveKitSecret = "livekit-secret-do-not-print"
	testAPIToken      = "api-token-do-not-print"
)

func TestSecretsAreNeverPrinted(t *testing.T) {
	c, err := Parse("f.yaml", []byte(minimal), "/etc/intercom")
	if err != nil {
		t.Fatal(err)
	}
	c.Matrix.Password, c.Matrix.AccessToken = testPassword, testToken
	c.MatrixRTC.LiveKit.APIKey, c.MatrixRTC.LiveKit.Secret = testLiveKitKey, testLiveKitSecret
	c.API.Token = testAPIToken
	creds := Credentials{Homeserver: "https://h", UserID: "@i:h", DeviceID: "DEV", AccessToken: testToken}

	var outputs []string
	for _, v := range []any{c, *c, c.Matrix, &c.Matrix, creds, &creds,
		struct{ M Matrix }{c.Matrix}, struct{ C Credentials }{creds},
		c.MatrixRTC, c.MatrixRTC.LiveKit, &c.MatrixRTC.LiveKit, c.API, &c.API} {
		for _, verb := range []string{"%v", "%+v", "%s", "%#v"} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("loaded", "config", c, "matrix", c.Matrix, "creds", creds,
			"matrixrtc", c.MatrixRTC, "livekit", c.MatrixRTC.LiveKit, "api", c.API)
		outputs = append(outputs, b.String())
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(js))

	for _, out := range outputs {
		for _, secret := range []string{testPassword, testToken, testLiveKitKey, testLiveKitSecret, testAPIToken} {
			if strings.Contains(out, secret) {
				t.Errorf("secret %q printed: %s", secret, out)
			}
		}
	}
	// Redacted, not dropped: whether a secret is set is worth seeing.
	if s := c.String(); !strings.Contains(s, "Password:"+redacted) || !strings.Contains(s, "@intercom:example.org") {
		t.Errorf("String() = %s", s)
	}
	if s := c.String(); !strings.Contains(s, "Secret:"+redacted) || !strings.Contains(s, "APIKey:"+redacted) {
		t.Errorf("String() does not show that the LiveKit keys are set: %s", s)
	}
	if s := c.String(); !strings.Contains(s, "Token:"+redacted) {
		t.Errorf("String() does not show that the API token is set: %s", s)
	}
	if s := outputs[len(outputs)-2]; !strings.Contains(s, `"password":"[REDACTED]"`) || !strings.Contains(s, `"user_id":"@intercom:example.org"`) {
		t.Errorf("slog JSON = %s", s)
	}
}

// TestStringShowsEveryField keeps String in step with Config when fields
// are added.
func TestStringShowsEveryField(t *testing.T) {
	s := Config{}.String()
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() || f.Name == "Warnings" {
			continue
		}
		if !strings.Contains(s, f.Name+":") {
			t.Errorf("Config.String() lacks %s: %s", f.Name, s)
		}
	}
}
