package dnsserver

import (
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"math/big"

	"github.com/authmilter/authmilter/keys"
)

// recordValue returns keys.FormatRecord(k) without encoding/asn1: the
// answers of a busy server spend most of their time there otherwise
// (x509.MarshalPKIXPublicKey is reflection-driven). The test compares the
// two for every key size.
func recordValue(k *keys.Key) string {
	var spki []byte
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		spki = rsaSPKI(pub)
	case ed25519.PublicKey:
		spki = pub
	default:
		return keys.FormatRecord(k)
	}
	prefix := "v=DKIM1; k=" + k.Algorithm.KeyType() + "; p="
	if k.Testing {
		prefix = "v=DKIM1; k=" + k.Algorithm.KeyType() + "; t=y; p="
	}
	buf := make([]byte, len(prefix)+base64.StdEncoding.EncodedLen(len(spki)))
	copy(buf, prefix)
	base64.StdEncoding.Encode(buf[len(prefix):], spki)
	return string(buf)
}

// rsaAlgID is the DER AlgorithmIdentifier of rsaEncryption with NULL
// parameters (RFC 3279 §2.3.1).
var rsaAlgID = []byte{0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00}

// rsaSPKI encodes an RSA public key as a DER SubjectPublicKeyInfo, as
// x509.MarshalPKIXPublicKey does, into one buffer.
func rsaSPKI(pub *rsa.PublicKey) []byte {
	n := pub.N.Bytes()
	e := big.NewInt(int64(pub.E)).Bytes()
	seqBody := tlvLen(intLen(n)) + tlvLen(intLen(e))
	bitBody := 1 + tlvLen(seqBody)
	outerBody := len(rsaAlgID) + tlvLen(bitBody)
	out := make([]byte, 0, tlvLen(outerBody))
	out = appendHeader(out, 0x30, outerBody)
	out = append(out, rsaAlgID...)
	out = appendHeader(out, 0x03, bitBody)
	out = append(out, 0) // no unused bits
	out = appendHeader(out, 0x30, seqBody)
	out = appendInt(out, n)
	return appendInt(out, e)
}

// intLen is the length of the DER INTEGER content of a non-negative
// big-endian number without leading zeros.
func intLen(b []byte) int {
	if len(b) == 0 || b[0]&0x80 != 0 {
		return len(b) + 1
	}
	return len(b)
}

// appendInt appends a non-negative integer as a DER INTEGER.
func appendInt(out, b []byte) []byte {
	out = appendHeader(out, 0x02, intLen(b))
	if len(b) == 0 || b[0]&0x80 != 0 {
		out = append(out, 0)
	}
	return append(out, b...)
}

// tlvLen is the length of a DER element with l bytes of content.
func tlvLen(l int) int {
	switch {
	case l < 0x80:
		return 2 + l
	case l < 0x100:
		return 3 + l
	case l < 0x10000:
		return 4 + l
	}
	return 5 + l
}

// appendHeader appends a DER tag and length.
func appendHeader(out []byte, tag byte, l int) []byte {
	out = append(out, tag)
	switch {
	case l < 0x80:
		return append(out, byte(l))
	case l < 0x100:
		return append(out, 0x81, byte(l))
	case l < 0x10000:
		return append(out, 0x82, byte(l>>8), byte(l))
	}
	return append(out, 0x83, byte(l>>16), byte(l>>8), byte(l))
}
