// Package pgtest runs a private PostgreSQL server for tests: its own
// cluster in a temporary folder, listening only on 127.0.0.1 at a port
// chosen free at run time (and on a unix socket in that folder), with
// durability off so that it starts and writes fast. It never touches the
// machine's own clusters.
//
// The binaries come from Debian's "postgresql" package
// (/usr/lib/postgresql/<version>/bin, the newest version found). PostgreSQL
// refuses to run as root, so when the test runs as root the server runs
// as the "postgres" system user, and the folder is handed to that user.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// binGlob is where Debian installs the server binaries, one folder per
// major version.
const binGlob = "/usr/lib/postgresql/*/bin"

// readyTimeout bounds how long Start waits for the server to accept
// connections; generous, for a busy 2-core machine.
const readyTimeout = 90 * time.Second

// stopTimeout bounds how long Stop waits after a fast shutdown before it
// asks for an immediate one, and then before it kills.
const stopTimeout = 30 * time.Second

// Server is one running PostgreSQL server. Its superuser is "postgres",
// trusted without a password on 127.0.0.1 and the socket.
type Server struct {
	dir     string
	bin     string
	port    int
	cred    *syscall.Credential
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Start runs initdb in dir/data and a postgres server listening only on
// 127.0.0.1 at a free port (and a unix socket in dir), and waits until it
// accepts connections. dir must exist, and every folder above it must be
// searchable by the postgres user when running as root (os.MkdirTemp under
// /tmp is; t.TempDir's parent is not). Start makes dir mode 0755 and,
// as root, gives it to the postgres user. Missing binaries give an error
// naming the Debian package to install.
func Start(dir string) (*Server, error) {
	bin, err := findBinaries(binGlob)
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{dir: dir, bin: bin}
	if err := s.prepareDir(); err != nil {
		return nil, err
	}
	if err := s.initdb(); err != nil {
		return nil, err
	}
	// A port found free can be taken by someone else before postgres binds
	// it; try a few.
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		err = s.start()
		if err == nil || attempt == 4 || !strings.Contains(err.Error(), "in use") {
			return s, err
		}
	}
}

// Restart starts the server again after Stop, on the same port and data,
// as a database that came back after an outage does.
func (s *Server) Restart() error {
	if s.running() {
		return errors.New("pgtest: Restart: the server is running")
	}
	return s.start()
}

// Port is the TCP port the server listens on at 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Dir is the folder holding the cluster, the socket and postgres.log.
func (s *Server) Dir() string { return s.dir }

// DSN is the URL of database name for the superuser over TCP.
func (s *Server) DSN(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, name)
}

// databaseName is what CreateDatabase accepts: a plain identifier, so it
// needs no quoting.
var databaseName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// CreateDatabase creates a fresh, empty database and returns its URL.
func (s *Server) CreateDatabase(name string) (dsn string, err error) {
	if !databaseName.MatchString(name) {
		return "", fmt.Errorf("pgtest: database name %q: want lower-case letters, digits and _", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: connect to create %s: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return s.DSN(name), nil
}

// Stop shuts the server down fast (SIGINT to its PID: running
// transactions are rolled back) and waits for it to exit; if it does not,
// it sends SIGQUIT and then SIGKILL. Stopping a stopped server does
// nothing.
func (s *Server) Stop() error {
	if !s.running() {
		return nil
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("pgtest: signal postgres (pid %d): %w", s.cmd.Process.Pid, err)
		}
		select {
		case <-s.exited:
			return nil
		case <-time.After(stopTimeout):
		}
	}
	return fmt.Errorf("pgtest: postgres (pid %d) did not exit after SIGKILL", s.cmd.Process.Pid)
}

func (s *Server) running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// findBinaries returns the newest version's bin folder that has initdb
// and postgres.
func findBinaries(glob string) (string, error) {
	dirs, _ := filepath.Glob(glob)
	type found struct {
		dir     string
		version float64
	}
	var all []found
	for _, d := range dirs {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		if err != nil {
			continue
		}
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			all = append(all, found{d, v})
		}
	}
	if len(all) == 0 {
		return "", fmt.Errorf("pgtest: no PostgreSQL server binaries (initdb, postgres) in %s: install the Debian package \"postgresql\"", glob)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].version > all[j].version })
	return all[0].dir, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// prepareDir opens dir to the server's user: postgres must be able to
// reach the folder and own what it writes there.
func (s *Server) prepareDir() error {
	if err := os.Chmod(s.dir, 0o755); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgtest: running as root needs the \"postgres\" system user (Debian package \"postgresql\" creates it): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("pgtest: postgres user ids: %w", err)
	}
	s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if err := os.Chown(s.dir, int(uid), int(gid)); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

// command builds a command of the server's binaries that runs as the
// server's user and dies with the test process.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"LC_ALL=C", "TZ=UTC", "PATH=" + s.bin + ":/usr/bin:/bin"}
	// Pdeathsig: a test binary that is killed must not leave a server
	// behind (SIGQUIT is postgres's immediate shutdown). Setpgid: a ^C
	// meant for the test does not reach the server before Stop does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	return cmd
}

func (s *Server) initdb() error {
	cmd := s.command("initdb", "-D", filepath.Join(s.dir, "data"), "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: initdb in %s: %w\n%s", s.dir, err, out)
	}
	return nil
}

// start runs postgres in the foreground of a child process (so that its
// PID is ours to signal) and waits until it accepts connections.
func (s *Server) start() error {
	logPath := filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logFile.Close()
	cmd := s.command("postgres", "-D", filepath.Join(s.dir, "data"),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(s.port),
		"-c", "unix_socket_directories="+s.dir,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB",
		"-c", "max_connections=100",
		"-c", "logging_collector=off",
		"-c", "log_min_messages=warning")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		s.waitErr = cmd.Wait()
		close(exited)
	}(s.exited)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("pgtest: postgres exited at start (%v): %s", s.waitErr, logTail(logPath))
		case <-ctx.Done():
			_ = s.Stop()
			return fmt.Errorf("pgtest: postgres did not accept connections within %v: %w: %s", readyTimeout, err, logTail(logPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort asks the kernel for a port free on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logTail is the end of the server's log, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}
