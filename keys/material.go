package keys

import (
	"bytes"
	"container/list"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"syscall"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// material is the compact form of one private key, shared by the Key
// values made from one file (a reload that only changes the state file
// copies the Key, not this). A 100,000-domain key table parsed in full
// held about 12 KiB per RSA key (the big.Int values of the key and its
// precomputation); this keeps the modulus and the primes as bytes, about
// 700 bytes with the rest for RSA-2048, and the 32-byte seed of an Ed25519
// key.
// The crypto.Signer is built on first use (see Key.PrivateKey) and kept in
// a bounded SignerCache. The key file is never read again after loading:
// a key file that becomes unreadable while the daemon runs changes nothing
// until the next reload, which then fails and keeps the old table.
type material struct {
	sum [sha256.Size]byte // of the file's content

	// data is n‖p‖q of an RSA key (big-endian, without leading zeros;
	// n is nLen bytes, p pLen) or the seed of an Ed25519 key (e == 0).
	// The private exponent and the CRT values are computed when the key
	// is built: 384 bytes less per RSA-2048 key for 0.1 ms per build.
	data       []byte
	nLen, pLen uint16
	e          int32

	// pub is the Ed25519 public key, derived once (25 µs); an RSA public
	// key is made from n at each call instead of being kept (300 bytes
	// more per key).
	pubOnce sync.Once
	pub     ed25519.PublicKey

	// signer, when set, is the parsed key itself (keys loaded one by one
	// by the tools, which parse them anyway); it is not cached.
	signer crypto.Signer
	cache  *SignerCache

	// lazy is set for a key taken from the table index at start (see
	// LoadIndex): data, nLen, pLen and e are read from its file when the
	// key is first used, and the file must still have sum.
	lazy *lazyFill
}

// lazyFill reads an indexed key's file once.
type lazyFill struct {
	path string
	once sync.Once
	err  error
}

// fill reads the key of an indexed material (see lazy); it does nothing
// for the others.
func (m *material) fill() error {
	if m.lazy == nil {
		return nil
	}
	m.lazy.once.Do(func() {
		data, _, err := readKeyFile(m.lazy.path)
		if err != nil {
			m.lazy.err = err
			return
		}
		if sha256.Sum256(data) != m.sum {
			m.lazy.err = errors.New("the key file changed since the daemon started; the next reload reads it")
			return
		}
		f, _, _, err := parseMaterial(data)
		if err != nil {
			m.lazy.err = err
			return
		}
		m.data, m.nLen, m.pLen, m.e = f.data, f.nLen, f.pLen, f.e
	})
	return m.lazy.err
}

// n, p, q and seed return the parts of data.
func (m *material) n() []byte    { return m.data[:m.nLen] }
func (m *material) p() []byte    { return m.data[m.nLen : m.nLen+m.pLen] }
func (m *material) q() []byte    { return m.data[m.nLen+m.pLen:] }
func (m *material) seed() []byte { return m.data }

// fileID tells whether a file may have changed without reading it: the
// change time moves on every write, chmod, chown and rename, and no tool
// can set it back, so a file with the same device, inode, size,
// modification and change time has the same content.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds
}

// fileIDOf returns the identity of the file fi describes (zero when the
// platform gives no inode).
func fileIDOf(fi os.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// oidRSA and oidEd25519 are the PKCS#8 algorithm identifiers we load.
var (
	oidRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// parseMaterial checks a PEM private key's structure and keeps its compact
// form, without the cost of building the key (RSA-2048: about 0.2 ms,
// which is 20 s for 100,000 keys): the PKCS#1 or PKCS#8 structure is
// walked, the primes are checked to multiply to the modulus and the
// modulus to have at least MinRSABits. The private exponent and the CRT
// values are made from the primes when the key is built, so the file's
// own are never used; what only building finds (a public exponent with
// no inverse, which no key generator makes) is found at first use, and
// that key then signs nothing (see Key.PrivateKey).
func parseMaterial(data []byte) (*material, Algorithm, int, error) {
	block := decodePEM(data)
	if block == nil {
		return nil, "", 0, errors.New("no PEM block found (want a PEM private key)")
	}
	var m *material
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		m, err = parsePKCS1(block.Bytes)
	case "PRIVATE KEY":
		m, err = parsePKCS8(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, "", 0, errors.New("encrypted private keys are not supported; store it unencrypted with mode 0600")
	default:
		return nil, "", 0, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, "", 0, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	m.sum = sha256.Sum256(data)
	if m.e == 0 {
		return m, Ed25519SHA256, 256, nil
	}
	return m, RSASHA256, new(big.Int).SetBytes(m.n()).BitLen(), nil
}

// parsePKCS8 reads a PKCS#8 PrivateKeyInfo (RFC 5208, RFC 8410).
func parsePKCS8(der []byte) (*material, error) {
	in := cryptobyte.String(der)
	var info, algID cryptobyte.String
	var version int
	var oid asn1.ObjectIdentifier
	var inner []byte
	if !in.ReadASN1(&info, cbasn1.SEQUENCE) || !in.Empty() ||
		!info.ReadASN1Integer(&version) || version > 1 ||
		!info.ReadASN1(&algID, cbasn1.SEQUENCE) || !algID.ReadASN1ObjectIdentifier(&oid) ||
		!info.ReadASN1Bytes(&inner, cbasn1.OCTET_STRING) {
		return nil, errors.New("malformed PKCS#8 private key")
	}
	switch {
	case oid.Equal(oidRSA):
		return parsePKCS1(inner)
	case oid.Equal(oidEd25519):
		seed := cryptobyte.String(inner)
		var raw []byte
		if !seed.ReadASN1Bytes(&raw, cbasn1.OCTET_STRING) || !seed.Empty() || len(raw) != ed25519.SeedSize {
			return nil, errors.New("malformed Ed25519 private key")
		}
		return &material{data: bytes.Clone(raw)}, nil
	}
	return nil, fmt.Errorf("unsupported key type %s (want RSA or Ed25519)", oid)
}

// parsePKCS1 reads an RSAPrivateKey (RFC 8017 A.1.2) with two primes.
func parsePKCS1(der []byte) (*material, error) {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	var version int
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(&version) {
		return nil, errors.New("malformed RSA private key")
	}
	if version != 0 {
		return nil, errors.New("RSA keys with more than two primes are not supported")
	}
	// n e d p q dp dq qinv: d and the CRT values are checked to be
	// positive integers only; the key is rebuilt from n, e, p and q.
	var raw [8][]byte
	for i := range raw {
		var v cryptobyte.String
		if !seq.ReadASN1(&v, cbasn1.INTEGER) || len(v) == 0 || v[0]&0x80 != 0 {
			return nil, errors.New("malformed RSA private key")
		}
		raw[i] = v
		for len(raw[i]) > 1 && raw[i][0] == 0 {
			raw[i] = raw[i][1:]
		}
		if len(raw[i]) == 1 && raw[i][0] == 0 {
			return nil, errors.New("malformed RSA private key")
		}
	}
	if !seq.Empty() {
		return nil, errors.New("malformed RSA private key (trailing data)")
	}
	n, e := new(big.Int).SetBytes(raw[0]), new(big.Int).SetBytes(raw[1])
	p, q := new(big.Int).SetBytes(raw[3]), new(big.Int).SetBytes(raw[4])
	if bits := n.BitLen(); bits < MinRSABits {
		return nil, fmt.Errorf("RSA key has %d bits; at least %d are required (RFC 8301), 2048 recommended", bits, MinRSABits)
	}
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, errors.New("invalid RSA key: bad public exponent")
	}
	if new(big.Int).Mul(p, q).Cmp(n) != 0 {
		return nil, errors.New("invalid RSA key: the primes do not multiply to the modulus")
	}
	// One allocation of their own: slices of der would keep all of it.
	if len(raw[0]) > 1<<15 || len(raw[3]) > 1<<15 {
		return nil, errors.New("RSA key too large")
	}
	data := make([]byte, 0, len(raw[0])+len(raw[3])+len(raw[4]))
	data = append(append(append(data, raw[0]...), raw[3]...), raw[4]...)
	return &material{data: data, nLen: uint16(len(raw[0])), pLen: uint16(len(raw[3])), e: int32(e.Int64())}, nil
}

// decodePEM is pem.Decode for the first PEM block of data, with a fast
// path for the usual layout (a BEGIN line, base64 lines, an END line, no
// headers), which is five times faster and gives the same result
// (FuzzDecodePEM compares them); anything else goes to pem.Decode.
func decodePEM(data []byte) *pem.Block {
	const begin, end, dashes = "-----BEGIN ", "-----END ", "-----"
	rest, ok := bytes.CutPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(begin))
	if ok {
		typ, body, ok1 := bytes.Cut(rest, []byte(dashes+"\n"))
		body, _, ok2 := bytes.Cut(body, []byte("\n"+end+string(typ)+dashes))
		// Headers (a ':'), spaces and tabs are not base64: Decode fails
		// on them and pem.Decode takes over. Decode skips \r and \n.
		if ok1 && ok2 && !bytes.ContainsAny(typ, "\r\n-") {
			der := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
			if n, err := base64.StdEncoding.Decode(der, body); err == nil {
				return &pem.Block{Type: string(typ), Bytes: der[:n]}
			}
		}
	}
	block, _ := pem.Decode(data)
	return block
}

// public returns the public key.
func (m *material) public() crypto.PublicKey {
	if m.fill() != nil {
		return nil // compares equal to no record's key
	}
	switch {
	case m.signer != nil:
		return m.signer.Public()
	case m.e == 0:
		m.pubOnce.Do(func() { m.pub = ed25519.NewKeyFromSeed(m.seed()).Public().(ed25519.PublicKey) })
		return m.pub
	default:
		return &rsa.PublicKey{N: new(big.Int).SetBytes(m.n()), E: int(m.e)}
	}
}

// build makes the signer from the compact form, checked as
// ParsePrivateKey checks a key read from a file.
func (m *material) build() (crypto.Signer, error) {
	if err := m.fill(); err != nil {
		return nil, err
	}
	if m.e == 0 {
		return ed25519.NewKeyFromSeed(m.seed()), nil
	}
	p, q := new(big.Int).SetBytes(m.p()), new(big.Int).SetBytes(m.q())
	one := big.NewInt(1)
	pm1, qm1 := new(big.Int).Sub(p, one), new(big.Int).Sub(q, one)
	// d = e⁻¹ mod lcm(p-1, q-1): the signatures are the same as with the
	// file's d (PKCS#1 v1.5 is deterministic and d is unique modulo λ(n)).
	gcd := new(big.Int).GCD(nil, nil, pm1, qm1)
	lambda := new(big.Int).Div(new(big.Int).Mul(pm1, qm1), gcd)
	d := new(big.Int).ModInverse(big.NewInt(int64(m.e)), lambda)
	qinv := new(big.Int).ModInverse(q, p)
	if d == nil || qinv == nil {
		return nil, errors.New("invalid RSA key: the public exponent or q has no inverse")
	}
	k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: new(big.Int).SetBytes(m.n()), E: int(m.e)}, D: d, Primes: []*big.Int{p, q}}
	k.Precomputed.Dp = new(big.Int).Mod(d, pm1)
	k.Precomputed.Dq = new(big.Int).Mod(d, qm1)
	k.Precomputed.Qinv = qinv
	// With the CRT values given, crypto/rsa takes the path it takes for a
	// key crypto/x509 read from a file: a fifth of the cost of computing
	// them itself (which includes a signing self-test).
	k.Precompute()
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("invalid RSA key: %w", err)
	}
	// libcrypto's signer when the binary has it (signer_openssl.go), k
	// itself otherwise (signer_go.go); a key libcrypto refuses is refused
	// here, with its reason.
	return newRSASigner(k)
}

// closeSigner frees what a signer holds outside Go's heap (libcrypto's
// copy of an RSA key), if anything: a signer leaving the cache.
func closeSigner(s crypto.Signer) {
	if c, ok := s.(interface{ Close() error }); ok {
		c.Close() // frees memory; it cannot fail in a way to act on
	}
}

// DefaultKeyCache is the size of a SignerCache made without one (the
// default of keys.key_cache).
const DefaultKeyCache = 10000

// SignerCache keeps the most recently used parsed private keys, at most
// its size: a 100,000-domain key table parsed in full would hold about
// 1.2 GiB, while a provider's mail comes from far fewer domains in any
// hour. It is safe for concurrent use and shared by the tables that
// reloads read (a key parsed before a reload stays parsed).
type SignerCache struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *material, most recently used first
	items map[*material]*list.Element
	built map[*material]crypto.Signer
}

// NewSignerCache returns a cache of size parsed keys (DefaultKeyCache if
// size < 1).
func NewSignerCache(size int) *SignerCache {
	if size < 1 {
		size = DefaultKeyCache
	}
	return &SignerCache{size: size, order: list.New(), items: map[*material]*list.Element{}, built: map[*material]crypto.Signer{}}
}

// Resize changes the cache's size, dropping the least recently used keys
// beyond it.
func (c *SignerCache) Resize(size int) {
	if size < 1 {
		size = DefaultKeyCache
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.size = size
	c.evict()
}

// Len is the number of parsed keys held.
func (c *SignerCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// get returns m's signer, building it on a miss. Two transactions that
// miss on one key at once both build it; the second result is dropped
// (and closed).
func (c *SignerCache) get(m *material) (crypto.Signer, error) {
	c.mu.Lock()
	if e, ok := c.items[m]; ok {
		c.order.MoveToFront(e)
		s := c.built[m]
		c.mu.Unlock()
		return s, nil
	}
	c.mu.Unlock()
	s, err := m.build()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[m]; !ok {
		c.items[m] = c.order.PushFront(m)
		c.built[m] = s
		c.evict()
		return s, nil
	}
	closeSigner(s)
	return c.built[m], nil
}

// evict drops the least recently used keys beyond the size and closes
// their signers: a transaction that still holds one gets its signature
// from crypto/rsa (see opensslRSA.Close). Callers hold mu.
func (c *SignerCache) evict() {
	for len(c.items) > c.size {
		e := c.order.Back()
		m := e.Value.(*material)
		c.order.Remove(e)
		delete(c.items, m)
		closeSigner(c.built[m])
		delete(c.built, m)
	}
}
