package main

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/authmilter/authmilter/policy"
)

// logSwitch is the daemon's logger whose level and format (log.level,
// log.format) a reload changes in place: every logger derived from it,
// including the milter server's, follows at once.
type logSwitch struct {
	level slog.LevelVar
	json  atomic.Bool
	root  *switchHandler
}

// newLogSwitch builds the logger for cfg, writing to w.
func newLogSwitch(w io.Writer, cfg *policy.Config) *logSwitch {
	s := &logSwitch{}
	opts := &slog.HandlerOptions{Level: &s.level}
	s.root = &switchHandler{sw: s, text: slog.NewTextHandler(w, opts), json: slog.NewJSONHandler(w, opts)}
	s.set(cfg)
	return s
}

// logger returns a logger that follows the switch.
func (s *logSwitch) logger() *slog.Logger { return slog.New(s.root) }

// set applies cfg's log.level and log.format.
func (s *logSwitch) set(cfg *policy.Config) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level)) // validated with the config
	s.level.Set(level)
	s.json.Store(cfg.Log.Format == "json")
}

// switchHandler keeps a text and a JSON handler with the same attributes
// and groups and writes with the one the switch selects.
type switchHandler struct {
	sw         *logSwitch
	text, json slog.Handler
}

func (h *switchHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.sw.level.Level()
}

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.sw.json.Load() {
		return h.json.Handle(ctx, r)
	}
	return h.text.Handle(ctx, r)
}

func (h *switchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &switchHandler{sw: h.sw, text: h.text.WithAttrs(as), json: h.json.WithAttrs(as)}
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	return &switchHandler{sw: h.sw, text: h.text.WithGroup(name), json: h.json.WithGroup(name)}
}
