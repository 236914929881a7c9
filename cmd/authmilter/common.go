package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// defaultConfigPath is read when -config is not given and the file exists.
const defaultConfigPath = "/etc/authmilter/authmilter.toml"

// exitError carries a specific exit status without a message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func asExit(err error, target *exitError) bool { return errors.As(err, target) }

// configFlag adds -config to fs.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "config file (default: "+defaultConfigPath+" if present, else built-in defaults)")
}

// loadConfig reads the named config, the default file, or the defaults.
func loadConfig(path string) (*policy.Config, string, error) {
	if path == "" {
		if _, err := os.Stat(defaultConfigPath); err == nil {
			path = defaultConfigPath
		} else {
			return policy.DefaultConfig(), "(built-in defaults)", nil
		}
	}
	cfg, err := policy.LoadConfig(path)
	return cfg, path, err
}

// newResolver builds the DNS resolver the config asks for.
func newResolver(cfg *policy.Config) (*resolve.Resolver, error) {
	return newMeteredResolver(cfg, nil)
}

// newMeteredResolver is newResolver telling onError (if set: the daemon's
// metrics) about every failed DNS attempt, by kind.
func newMeteredResolver(cfg *policy.Config, onError func(kind string)) (*resolve.Resolver, error) {
	var servers []string
	for _, s := range cfg.DNS.Servers {
		n, err := policy.NormalizeDNSServer(s)
		if err != nil {
			return nil, err
		}
		servers = append(servers, n)
	}
	return resolve.New(resolve.Config{Servers: servers, Timeout: cfg.DNS.Timeout.Duration, OnError: onError})
}

// newLogger builds the slog logger the config asks for.
func newLogger(cfg *policy.Config, w io.Writer) *slog.Logger {
	return newLogSwitch(w, cfg).logger()
}

// compileTimeout bounds the DNS checks of a compile at start or reload.
const compileTimeout = 2 * time.Minute
