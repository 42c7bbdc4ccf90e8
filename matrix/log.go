package matrix

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/rs/zerolog"
)

// zerologToSlog is an io.Writer for zerolog that re-emits each JSON log line
// through slog, so mautrix's logging ends up in the intercom's one log
// stream without a global logger.
//
// Every line goes out at debug level, its own level kept as mautrix_level:
// mautrix logs the outcome of each request (failures at error level, with
// the request body), while this package returns or logs every failure
// itself, once, in the house vocabulary. Forwarding mautrix's errors as
// errors would log each sync failure of an outage twice and put call SDP
// into error logs.
type zerologToSlog struct {
	log *slog.Logger
}

func (w zerologToSlog) Write(p []byte) (int, error) {
	var fields map[string]any
	if err := json.Unmarshal(p, &fields); err != nil {
		w.log.Debug("mautrix", "line", string(p))
		return len(p), nil
	}
	msg, _ := fields[zerolog.MessageFieldName].(string)
	delete(fields, zerolog.MessageFieldName)
	delete(fields, zerolog.TimestampFieldName)
	attrs := make([]slog.Attr, 0, len(fields))
	for k, v := range fields {
		if k == zerolog.LevelFieldName {
			k = "mautrix_level"
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	w.log.LogAttrs(context.Background(), slog.LevelDebug, "mautrix: "+msg, attrs...)
	return len(p), nil
}

// newZerolog returns the zerolog.Logger given to mautrix: disabled unless
// log has debug enabled, so that nothing is formatted for nobody.
func newZerolog(log *slog.Logger) zerolog.Logger {
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return zerolog.Nop()
	}
	return zerolog.New(zerologToSlog{log: log}).Level(zerolog.DebugLevel)
}
