package resolve

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ednsSize is the EDNS0 UDP buffer size we advertise (DNS flag day 2020).
const ednsSize = 1232

// readSize is the UDP read buffer: larger than ednsSize so that an answer
// from a server that ignores our EDNS0 size is read whole instead of being
// cut and failing to unpack.
const readSize = 4096

// query asks the servers in order about (qname, qtype) and returns the first
// usable answer (NOERROR or NXDOMAIN) with the server that gave it. When no
// server gives one, the error is the last server's, always temporary.
func (r *Resolver) query(ctx context.Context, display, qname string, qtype uint16) (*dns.Msg, string, error) {
	var last error = temporary(display, "", errNoServers)
	for _, server := range r.servers {
		if ctx.Err() != nil {
			return nil, "", netError(ctx, display, server, "", ctx.Err())
		}
		msg, err := r.ask(ctx, display, server, qname, qtype)
		if err == nil {
			return msg, server, nil
		}
		r.countError(ctx, "", err)
		last = err
	}
	return nil, "", last
}

// ask asks one server: over UDP first, over TCP when the UDP answer is
// truncated (RFC 7766 §5). Failure rcodes are temporary errors.
func (r *Resolver) ask(ctx context.Context, display, server, qname string, qtype uint16) (*dns.Msg, *net.DNSError) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype) // also picks a random ID
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	resp, err := r.exchange(ctx, "udp", server, m)
	if err != nil {
		return nil, netError(ctx, display, server, "", err)
	}
	if resp.Truncated {
		m.Id = dns.Id()
		resp, err = r.exchange(ctx, "tcp", server, m)
		if err != nil {
			return nil, netError(ctx, display, server, errTCPRetry, err)
		}
		if resp.Truncated {
			return nil, temporary(display, server, errTCPTruncated)
		}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		if len(resp.Question) != 1 || resp.Question[0].Qtype != qtype ||
			!strings.EqualFold(resp.Question[0].Name, qname) {
			return nil, temporary(display, server, errWrongAnswer)
		}
		return resp, nil
	default:
		// SERVFAIL, REFUSED, FORMERR, NOTIMP...: the server could not
		// answer; they say nothing about the name.
		return nil, temporary(display, server, errRcodePrefix+dns.RcodeToString[resp.Rcode])
	}
}

// exchange sends m to server over network ("udp" or "tcp") on a fresh
// connection and reads the reply, within Config.Timeout and ctx.
//
// miekg/dns's Client.ExchangeContext only looks at the context's deadline,
// not at its cancellation, so the connection is handled here: a canceled
// context sets a past deadline, which unblocks the read.
func (r *Resolver) exchange(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	actx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(actx, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline, _ := actx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	// Registered after SetDeadline so that it cannot be overwritten by it.
	stop := context.AfterFunc(actx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	co := &dns.Conn{Conn: conn, UDPSize: readSize}
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		resp, err := co.ReadMsg()
		if resp != nil && network == "udp" && (resp.Id != m.Id || !resp.Response) {
			continue // not our answer (stray or spoofed): keep waiting (RFC 5452)
		}
		if err != nil {
			// A truncated UDP answer may fail to unpack completely; its
			// header is enough to retry over TCP.
			if resp != nil && resp.Truncated {
				return resp, nil
			}
			return nil, err
		}
		if resp.Id != m.Id || !resp.Response {
			return nil, errors.New(errMismatchedID)
		}
		return resp, nil
	}
}
