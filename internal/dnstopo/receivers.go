package dnstopo

import (
	"context"
	"fmt"
	"strings"

	"github.com/authmilter/authmilter/internal/interop"
)

// Verdict is one receiver's verdict on a message.
type Verdict struct {
	// Receiver is "dkimpy" or "opendkim".
	Receiver string
	// Pass is true when the message has at least one signature and the
	// receiver verified every one.
	Pass bool
	// Results are the receiver's results, one per signature, as text
	// ("d=... s=... a=...: pass").
	Results []string
	// Err is set when the receiver could not be run (its output is in
	// it); Pass is then false.
	Err error
}

// String formats the verdict for a failure message.
func (v Verdict) String() string {
	if v.Err != nil {
		return v.Receiver + ": " + v.Err.Error()
	}
	res := "fail"
	if v.Pass {
		res = "pass"
	}
	if len(v.Results) == 0 {
		return v.Receiver + ": " + res + " (no DKIM-Signature)"
	}
	return v.Receiver + ": " + res + ": " + strings.Join(v.Results, "; ")
}

// VerifyDkimpy verifies msg with dkimpy, which looks keys up through the
// world's resolver (a dnspython resolver asking Resolver.Addr only).
func (w *World) VerifyDkimpy(ctx context.Context, msg []byte) Verdict {
	res, err := interop.VerifyDkimpy(ctx, msg, w.Resolver.Addr)
	return verdict("dkimpy", res, err, func(r interop.DkimpyResult) bool { return r.OK })
}

// VerifyOpenDKIM verifies msg with the OpenDKIM milter, whose resolver
// (libunbound) forwards to the world's resolver.
func (w *World) VerifyOpenDKIM(ctx context.Context, msg []byte) Verdict {
	res, err := interop.VerifyOpenDKIMEach(ctx, msg, w.Resolver.Addr)
	return verdict("opendkim", res, err, func(r interop.OpenDKIMResult) bool { return r.Result == "pass" })
}

// verdict is receiver's Verdict on its per-signature results res (or its
// failure err): a pass needs at least one signature, and every one to
// pass.
func verdict[R fmt.Stringer](receiver string, res []R, err error, pass func(R) bool) Verdict {
	v := Verdict{Receiver: receiver, Err: err}
	if err != nil {
		return v
	}
	v.Pass = len(res) > 0
	for _, r := range res {
		v.Results = append(v.Results, r.String())
		v.Pass = v.Pass && pass(r)
	}
	return v
}

// Verify verifies msg with dkimpy and OpenDKIM through the resolver and
// returns nil only when both pass every signature; otherwise the error
// gives both verdicts and the resolver's view of each signature's key
// name.
func (w *World) Verify(ctx context.Context, msg []byte) error {
	// The two receivers run side by side: each is a process start and a
	// few lookups, and a scenario verifies many messages.
	vs := make([]Verdict, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		vs[1] = w.VerifyOpenDKIM(ctx, msg)
	}()
	vs[0] = w.VerifyDkimpy(ctx, msg)
	<-done
	var bad []string
	for _, v := range vs {
		if !v.Pass {
			bad = append(bad, v.Receiver)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	var all []string
	for _, v := range vs {
		all = append(all, v.String())
	}
	return fmt.Errorf("dnstopo: %s did not verify every signature through the resolver %s:\n  %s",
		strings.Join(bad, " and "), w.Resolver.Addr, strings.Join(all, "\n  "))
}
