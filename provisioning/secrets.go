package provisioning

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Environment variables that may hold the secrets instead of files, for
// containers and systemd credentials passed as environment.
const (
	EnvPassword    = "INTERCOM_MATRIX_PASSWORD"
	EnvAccessToken = "INTERCOM_MATRIX_ACCESS_TOKEN"
)

// maxSecretSize bounds a secret file; passwords and tokens are short.
const maxSecretSize = 64 << 10

// LoadSecrets reads the password or access token from the files the
// configuration names, or else from the environment (EnvPassword,
// EnvAccessToken). A file named in the configuration takes precedence over
// the environment. Exactly one of the two secrets must end up available.
// Problems are returned as Problems; secret files that other users can read
// are added to c.Warnings.
func (c *Config) LoadSecrets() error {
	return c.loadSecrets(os.LookupEnv)
}

func (c *Config) loadSecrets(lookupEnv func(string) (string, bool)) error {
	var probs Problems
	c.Matrix.Password, c.Matrix.AccessToken = "", ""
	// Drop warnings of an earlier call, so that calling again (say, after
	// fixing a file's mode) does not repeat them.
	c.Warnings = slices.DeleteFunc(c.Warnings, func(w Problem) bool {
		return slices.Contains(secretFileKeys, w.Key)
	})
	pw, pwFrom := c.secret("matrix.password_file", c.Matrix.PasswordFile, EnvPassword, lookupEnv, &probs)
	tok, tokFrom := c.secret("matrix.access_token_file", c.Matrix.AccessTokenFile, EnvAccessToken, lookupEnv, &probs)
	switch {
	case pw != "" && tok != "":
		if c.Matrix.PasswordFile != "" && c.Matrix.AccessTokenFile != "" {
			// The same problem Parse reports; Load drops the duplicate.
			probs = append(probs, bothSecretFiles(c, c.line("matrix.access_token_file")))
		} else {
			probs = append(probs, Problem{File: c.Path, Line: c.line("matrix"), Key: "matrix",
				Msg: fmt.Sprintf("both a password (%s) and an access token (%s) are configured; use only one", pwFrom, tokFrom)})
		}
	case pw == "" && tok == "" && len(probs) == 0 && c.lines["matrix.password_file"] == 0 && c.lines["matrix.access_token_file"] == 0 && !c.hasStoredSession():
		// When a file key is present but broken, that is already reported.
		probs = append(probs, Problem{File: c.Path, Line: c.line("matrix"), Key: "matrix",
			Msg: fmt.Sprintf("no credentials: set password_file or access_token_file, or %s or %s in the environment", EnvPassword, EnvAccessToken)})
	}
	c.loadAPIToken(&probs)
	c.loadMQTTFiles(lookupEnv, &probs)
	// The other secrets are read where they are used (ReadLiveKitKeys,
	// the TURN set-up); their files' modes are checked here, so that
	// check-config and the start-up log warn about them too.
	for _, f := range []struct{ key, file string }{
		{"turn.password_file", c.TURN.PasswordFile},
		{"matrixrtc.livekit.api_key_file", c.MatrixRTC.LiveKit.APIKeyFile},
		{"matrixrtc.livekit.api_secret_file", c.MatrixRTC.LiveKit.APISecretFile},
	} {
		if f.file == "" {
			continue
		}
		if st, err := os.Stat(f.file); err == nil && st.Mode().IsRegular() {
			c.warnShared(f.key, f.file, st.Mode().Perm())
		}
	}
	if len(probs) > 0 {
		return probs
	}
	c.Matrix.Password, c.Matrix.AccessToken = pw, tok
	return nil
}

// secretFileKeys are the keys naming files that hold secrets; loadSecrets
// owns the warnings about them.
var secretFileKeys = []string{
	"matrix.password_file", "matrix.access_token_file",
	"turn.password_file",
	"matrixrtc.livekit.api_key_file", "matrixrtc.livekit.api_secret_file",
	"api.token_file",
}

// warnShared adds a warning when other users than the owner may read the
// secret file set at key.
func (c *Config) warnShared(key, file string, perm fs.FileMode) {
	if perm&0o077 == 0 {
		return
	}
	c.Warnings = append(c.Warnings, Problem{File: c.Path, Line: c.line(key), Key: key,
		Msg: fmt.Sprintf("%s can be read by other users (mode %04o); run chmod 600 %s", file, perm, file)})
}

// secret reads one secret from file, or from the environment variable env
// when no file is configured. It returns the secret and where it came from.
//
// env may be "" (and lookupEnv nil) for a secret that comes only from a file.
func (c *Config) secret(key, file, env string, lookupEnv func(string) (string, bool), probs *Problems) (string, string) {
	var envVal string
	var envSet bool
	if env != "" {
		envVal, envSet = lookupEnv(env)
	}
	envSet = envSet && envVal != ""
	if file == "" {
		if envSet {
			return envVal, env
		}
		return "", ""
	}
	bad := func(msg string) (string, string) {
		*probs = append(*probs, Problem{File: c.Path, Line: c.line(key), Key: key, Msg: msg})
		return "", ""
	}
	if envSet {
		c.Warnings = append(c.Warnings, Problem{File: c.Path, Line: c.line(key), Key: key,
			Msg: fmt.Sprintf("%s is set in the environment but ignored, because this file takes precedence", env)})
	}
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) && key == "matrix.password_file" && c.hasStoredSession() {
		// The password is needed only for the first login; an installer may
		// remove it once the access token is kept in state_dir.
		c.Warnings = append(c.Warnings, Problem{File: c.Path, Line: c.line(key), Key: key,
			Msg: fmt.Sprintf("%s does not exist; using the session kept in %s (a new login would need the password again)", file, c.StateDir)})
		return "", ""
	}
	if errors.Is(err, fs.ErrNotExist) {
		return bad(fmt.Sprintf("%s does not exist", file))
	} else if err != nil {
		return bad(fmt.Sprintf("cannot read secret: %v", err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return bad(fmt.Sprintf("cannot read secret: %v", err))
	}
	if !st.Mode().IsRegular() {
		return bad(fmt.Sprintf("%s is not a regular file", file))
	}
	c.warnShared(key, file, st.Mode().Perm())
	data, err := readAllLimited(f, maxSecretSize)
	if err != nil {
		return bad(fmt.Sprintf("cannot read secret: %v", err))
	}
	if len(data) > maxSecretSize {
		return bad(fmt.Sprintf("%s is larger than %d bytes; it should hold only the secret", file, maxSecretSize))
	}
	// Editors add a final newline; it is not part of the secret.
	s := strings.TrimRight(string(data), "\r\n")
	switch {
	case s == "":
		return bad(fmt.Sprintf("%s is empty", file))
	case strings.ContainsAny(s, "\r\n"):
		return bad(fmt.Sprintf("%s must hold the secret on a single line", file))
	}
	return s, file
}

// hasStoredSession reports whether state_dir holds credentials from an
// earlier login.
func (c *Config) hasStoredSession() bool {
	if c.StateDir == "" {
		return false
	}
	st, err := os.Stat(filepath.Join(c.StateDir, credentialsFile))
	return err == nil && st.Mode().IsRegular() && st.Size() > 0
}

// line returns the line key was set on, or the line of its section, or 1.
func (c *Config) line(key string) int {
	for k := key; k != ""; k, _ = splitKey(k) {
		if l := c.lines[k]; l > 0 {
			return l
		}
	}
	return 1
}
