package main

import (
	"bytes"
	"context"
	"encoding"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/authmilter/authmilter/policy"
)

func cmdCheck(args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	print := fs.Bool("print", false, "print the effective config with defaults filled in")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	cfg, name, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	r, err := newResolver(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	pol, err := policy.Compile(ctx, cfg, r)
	if err != nil {
		return err
	}
	// What a reload would refuse, check refuses (the daemon itself starts
	// without keys.dir: a fresh install that signs nothing yet).
	if pol.Table().Missing() {
		return fmt.Errorf("keys.dir %s does not exist; create it (authmilter keygen -d DOMAIN does, or mkdir -m 700 for a daemon that only verifies)", cfg.Keys.Dir)
	}
	if err := (*keyDNS)(nil).check(cfg, pol.Table()); err != nil {
		return err
	}
	if *print {
		if err := toml.NewEncoder(os.Stdout).Encode(cfg); err != nil {
			return err
		}
	}
	keys := pol.Table().All()
	active := 0
	for _, d := range pol.Table().Domains() {
		active += len(pol.ActiveKeys(d))
	}
	fmt.Fprintf(os.Stderr, "%s: OK (%d keys in %s, %d active)\n", name, len(keys), cfg.Keys.Dir, active)
	for _, k := range keys {
		if p := pol.Publication(k); p.State != "published" && p.State != "unchecked" {
			fmt.Fprintf(os.Stderr, "  warning: %s: %s: %s\n", k.ID(), p.State, p.Detail)
		}
	}
	// A key under another name (an OpenDKIM mail.private) is never used:
	// say so rather than leave the domain unsigned without a word.
	for _, why := range pol.Table().Ignored() {
		fmt.Fprintf(os.Stderr, "  warning: ignored %s\n", why)
	}
	return nil
}

// readMessage reads a message from r for the offline commands.
func readMessage(r io.Reader) ([]policy.HeaderField, []byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("read message: %w", err)
	}
	return policy.SplitMessage(raw)
}

// cmdSign signs stdin through the same policy code the daemon uses: the
// message is an outbound transaction from -from-ip.
func cmdSign(args []string) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	fromIP := fs.String("from-ip", "127.0.0.1", "client address of the simulated transaction (must be outbound)")
	authUser := fs.String("auth", "", "simulate SMTP AUTH as this user")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(*fromIP)
	if err != nil {
		return fmt.Errorf("-from-ip: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	// The daemon's view of the keys: the same publication check (every
	// nameserver and the public path) and the same wait after publication,
	// from the daemon's saved first-seen times; never a key the daemon
	// would not sign with.
	v, err := loadKeyView(ctx, cfg)
	if err != nil {
		return err
	}
	pol := v.pol
	header, body, err := readMessage(os.Stdin)
	if err != nil {
		return err
	}
	env := &policy.Envelope{ClientIP: ip, AuthUser: *authUser, QueueID: "sign"}
	if out, _ := pol.Direction(env); !out {
		return fmt.Errorf("a message from %s is inbound under this config (outbound.networks); use -from-ip or -auth", ip)
	}
	msg := pol.Begin(env, header)
	msg.Write(body)
	d := msg.Finish()
	var out bytes.Buffer
	for _, f := range d.Prepend {
		out.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	for _, f := range header {
		out.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	out.WriteString("\r\n")
	out.Write(body)
	os.Stdout.Write(out.Bytes())
	fmt.Fprintln(os.Stderr, logLine(d))
	if len(d.Prepend) == 0 {
		return exitError(1)
	}
	return nil
}

// logLine renders a decision's log attributes as key=value pairs, as the
// daemon's text log does (groups as prefix.key, values by their text form).
func logLine(d *policy.Decision) string {
	var parts []string
	var add func(prefix string, attrs []slog.Attr)
	add = func(prefix string, attrs []slog.Attr) {
		for _, a := range attrs {
			if a.Key == "took" || a.Key == "ms" {
				continue
			}
			v := a.Value.Resolve()
			switch {
			case v.Kind() == slog.KindGroup:
				add(prefix+a.Key+".", v.Group())
				continue
			case v.Kind() == slog.KindAny:
				if tm, ok := v.Any().(encoding.TextMarshaler); ok {
					if b, err := tm.MarshalText(); err == nil {
						parts = append(parts, prefix+a.Key+"="+string(b))
						continue
					}
				}
			}
			parts = append(parts, prefix+a.Key+"="+v.String())
		}
	}
	add("", d.Log)
	return strings.Join(parts, " ")
}

func cmdVerify(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	r, err := newResolver(cfg)
	if err != nil {
		return err
	}
	header, body, err := readMessage(os.Stdin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Inbound.MessageTimeout.Duration+time.Second)
	defer cancel()
	results := policy.VerifyDKIM(ctx, r, header, bytes.NewReader(body), cfg.Inbound.MaxSignatures)
	if len(results) == 0 {
		fmt.Println("dkim=none (no signatures)")
		return exitError(1)
	}
	failed := false
	for _, res := range results {
		b := res.B
		if len(b) > 8 {
			b = b[:8]
		}
		line := fmt.Sprintf("dkim=%s header.d=%s header.s=%s header.a=%s header.b=%s", res.Result, res.Domain, res.Selector, res.Algorithm, b)
		if res.Domain == "" {
			line = "dkim=" + res.Result
		}
		if res.Reason != "" {
			line += " (" + res.Reason + ")"
		}
		fmt.Println(line)
		if res.Result != "pass" {
			failed = true
		}
	}
	if failed {
		return exitError(1)
	}
	return nil
}
