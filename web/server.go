package web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// HTTP limits of the status pages' server.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// writeSlack is added to web.request_timeout for writing the answer.
	writeSlack = 5 * time.Second
	// shutdownWait bounds how long Close waits for open requests.
	shutdownWait = 5 * time.Second
)

// Server serves the status pages on web.listen.
type Server struct {
	h        *Handler
	srv      *http.Server
	ln       net.Listener
	stop     chan struct{}
	sampling sync.WaitGroup
	serving  sync.WaitGroup
	once     sync.Once
	closeErr error
}

// Start validates o, reads the login files (o.Config.PasswordFile,
// TokenFile), listens on o.Config.Listen and serves until Close; it
// returns once listening (an error for a bad file or a port in use). It
// starts the metrics sampler too.
func Start(o Options) (*Server, error) {
	if o.Config.Listen == "" {
		return nil, errors.New("web: web.listen is empty")
	}
	h, err := NewHandler(o)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.Config.Listen)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	return serve(h, ln), nil
}

// serve serves h on ln, at most web.max_connections connections at once:
// a slow client holds one of them, never the daemon.
func serve(h *Handler, ln net.Listener) *Server {
	cfg := h.opt.Config
	s := &Server{h: h, ln: ln, stop: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      cfg.RequestTimeout.Duration + writeSlack,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          nil,
	}
	limited := netutil.LimitListener(ln, cfg.MaxConnections)
	s.sampling.Add(1)
	go func() {
		defer s.sampling.Done()
		h.sampler.run(s.stop)
	}()
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := s.srv.Serve(limited); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("web: serving stopped", "err", err)
		}
	}()
	h.log.Info("web: status pages listening", "addr", ln.Addr().String(), "login", h.auth.enabled())
	return s
}

// Addr is the address the pages are served on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops listening, lets open requests finish for a few seconds and
// then ends them, stops the sampler and closes the reports store.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		if err != nil {
			err = s.srv.Close()
		}
		s.serving.Wait()
		close(s.stop)
		s.sampling.Wait()
		s.closeErr = errors.Join(err, s.h.store.close())
	})
	return s.closeErr
}
