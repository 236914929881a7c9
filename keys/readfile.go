package keys

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readRegularFile reads a file that a folder listing gave as a regular
// file with the fewest system calls (open, fstat, read, close: readRegular
// needs two more), since a 100,000-domain key table is read at every
// start. It is as safe: the open does not block on a FIFO swapped in
// since the listing (O_NONBLOCK), the type is checked on the open
// descriptor, and a file larger than max is refused.
func readRegularFile(path string, max int64) ([]byte, os.FileInfo, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	fi := &statInfo{name: filepath.Base(path)}
	if err := syscall.Fstat(fd, &fi.st); err != nil {
		return nil, nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, fileType(fi.Mode()))
	}
	if fi.st.Size > max {
		return nil, nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	buf := make([]byte, fi.st.Size+1)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
		if int64(n) == fi.st.Size {
			break // all of it, as fstat said: no read for the end of file
		}
	}
	if int64(n) > max {
		return nil, nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return buf[:n], fi, nil
}

// statInfo is the os.FileInfo of a syscall.Stat_t.
type statInfo struct {
	name string
	st   syscall.Stat_t
}

func (s *statInfo) Name() string       { return s.name }
func (s *statInfo) Size() int64        { return s.st.Size }
func (s *statInfo) ModTime() time.Time { return time.Unix(s.st.Mtim.Unix()) }
func (s *statInfo) IsDir() bool        { return s.Mode().IsDir() }
func (s *statInfo) Sys() any           { return &s.st }

// Mode converts the type and permission bits as package os does.
func (s *statInfo) Mode() os.FileMode {
	m := os.FileMode(s.st.Mode & 0o777)
	switch s.st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		m |= os.ModeDir
	case syscall.S_IFIFO:
		m |= os.ModeNamedPipe
	case syscall.S_IFSOCK:
		m |= os.ModeSocket
	case syscall.S_IFCHR:
		m |= os.ModeDevice | os.ModeCharDevice
	case syscall.S_IFBLK:
		m |= os.ModeDevice
	case syscall.S_IFLNK:
		m |= os.ModeSymlink
	}
	return m
}

// dirEntry is one entry of a folder listing: a name and, when the file
// system says it, the type (DT_REG etc.; DT_UNKNOWN otherwise).
type dirEntry struct {
	name string
	typ  uint8
}

// isDir and isRegular read the listing's type; DT_UNKNOWN is neither.
func (e dirEntry) isDir() bool     { return e.typ == syscall.DT_DIR }
func (e dirEntry) isRegular() bool { return e.typ == syscall.DT_REG }

// readFolder lists a folder with the fewest system calls (open, fstat,
// getdents until empty, close: os.Open and ReadDir add a fcntl pair and
// a failed poller registration per folder, 400,000 calls for a
// 100,000-domain key table) and returns its FileInfo.
func readFolder(path string) (os.FileInfo, []dirEntry, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	fi := &statInfo{name: filepath.Base(path)}
	if err := syscall.Fstat(fd, &fi.st); err != nil {
		return nil, nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	var out []dirEntry
	buf := make([]byte, 8192)
	for {
		n, err := syscall.ReadDirent(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, nil, &os.PathError{Op: "readdirent", Path: path, Err: err}
		}
		if n <= 0 {
			return fi, out, nil
		}
		out = parseDirents(buf[:n], out)
		for i := range out {
			if out[i].typ == syscall.DT_UNKNOWN {
				// File systems that do not fill in the type.
				if fi, err := os.Lstat(filepath.Join(path, out[i].name)); err == nil {
					out[i].typ = direntType(fi.Mode())
				}
			}
		}
	}
}

// direntType is the DT_ type of a file mode (only the ones we test for).
func direntType(m os.FileMode) uint8 {
	switch {
	case m.IsDir():
		return syscall.DT_DIR
	case m.IsRegular():
		return syscall.DT_REG
	}
	return syscall.DT_LNK // anything else is looked at before it is read
}

// parseDirents appends the entries of a getdents64 buffer (struct
// linux_dirent64: inode 8 bytes, offset 8, record length 2, type 1, then
// the NUL-terminated name), without "." and "..".
func parseDirents(b []byte, out []dirEntry) []dirEntry {
	const nameOff = 19
	for len(b) >= nameOff {
		reclen := int(b[16]) | int(b[17])<<8
		if reclen < nameOff || reclen > len(b) {
			break // malformed: the kernel never does this
		}
		name := b[nameOff:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		if s := string(name); s != "." && s != ".." {
			out = append(out, dirEntry{name: s, typ: b[18]})
		}
		b = b[reclen:]
	}
	return out
}

// atFDCWD is AT_FDCWD: *at system calls then resolve paths as the plain
// ones do.
const atFDCWD = unix.AT_FDCWD

// statAt stats path relative to the folder open as dirfd (following a
// symbolic link, as os.Stat does) and returns its identity and mode bits.
func statAt(dirfd int, path string) (fileID, uint32, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, path, &st, 0); err != nil {
		return fileID{}, 0, err
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, st.Mode, nil
}
