package plugin

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// newLogger logs to file, or to stderr when file is empty. stdout is never
// used: the runtime reads the CNI result from it.
func newLogger(file string, attrs ...any) (*slog.Logger, io.Closer, error) {
	var w io.Writer = os.Stderr
	var closer io.Closer = io.NopCloser(nil)
	if file != "" {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("open logFile %s: %w", file, err)
		}
		w, closer = f, f
	}
	return slog.New(slog.NewTextHandler(w, nil)).With(attrs...), closer, nil
}
