// Package atomicfile replaces small files (credentials, the sync token,
// the door's memory) so that a reader, or the intercom after a power cut,
// finds either the old content or the new, never a torn or empty file.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// WriteFile replaces path with data and mode perm. The data goes to a
// temporary file in the same directory (so the rename cannot cross file
// systems), is flushed to disk, and is renamed over path, which POSIX
// makes atomic; then the directory is flushed so that the rename itself
// survives a power cut. The mode is set with chmod, before any data is
// written, so the umask does not widen or narrow it and a secret is never
// readable with a wider mode. On failure no temporary file is left behind
// and path is untouched, unless only the final flush of the directory
// failed.
func WriteFile(path string, data []byte, perm fs.FileMode) (err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, tempPrefix(name)+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir flushes a directory's entries, so that a rename or a removal in
// it survives a power cut. A file system that cannot (EINVAL, or not
// supported) is not worth failing a save for.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// RemoveTemps removes the temporary files that a crash between WriteFile's
// create and rename leaves in dir (named ".<name>.tmp-<random>"). They are
// never read, so this only keeps them from accumulating; call it when the
// directory is opened, before anything writes in it.
func RemoveTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("remove temporary files: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && strings.HasPrefix(n, ".") && strings.Contains(n, tempInfix) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove temporary files: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

const tempInfix = ".tmp-"

func tempPrefix(name string) string { return "." + name + tempInfix }
