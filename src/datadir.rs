//! The data directory: used by one process at a time, and trusted only while nobody but its
//! owner can change it.
//!
//! What simgate keeps there is either a secret (the HMAC and sealing keys, the API token, the
//! simulator's log of OTP texts in clear) or a promise (the queue), so:
//!
//! - the directory is refused when group or others may write to it (they could replace any file
//!   in it), and created 0700 when simgate creates it;
//! - every file simgate creates there is created 0600 with `O_EXCL` and `O_NOFOLLOW`, every file
//!   it opens there is opened with `O_NOFOLLOW`: a symlink planted at a file name is refused,
//!   never followed (following one would create the database at the link's target, or read a
//!   key from it);
//! - a secret file that group or others may read is refused, with the `chmod` that fixes it;
//! - [`Lock`] holds an exclusive `flock(2)` on `<data dir>/lock` for the life of the process,
//!   taken before any recovery, link or bind: a second daemon on the same directory would
//!   otherwise treat the first one's sends in flight as interrupted by a crash and send them
//!   again. The kernel drops a `flock` when its holder dies, so the file a killed process leaves
//!   behind never blocks the next start.
//!
//! Errors name the path, what is wrong and how to fix it; they never contain a file's contents.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "lock";

/// Group and other permission bits: a secret file must have none of them.
const GROUP_OTHER: u32 = 0o077;
/// Group and other write bits: a trusted directory must have none of them.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// Why a data directory, or a file in it, is refused or could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error(
        "{what} {subject} is in use by another simgate process ({holder}, holding {lock}); \
         stop that process first, or give this one its own {what}"
    )]
    Locked {
        /// What the lock protects ("data directory", "simulator link").
        what: &'static str,
        /// The directory or link it protects.
        subject: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// `PID <n>`, or `PID unknown` when the holder has not written it yet.
        holder: Holder,
    },
    /// The directory may be changed by group or others.
    #[error(
        "data directory {path} is writable by group or others (mode {mode:03o}), so anyone \
         could replace the keys or the database in it; run: chmod 700 {path}"
    )]
    DirOpen {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file may be read by group or others.
    #[error(
        "{path} is readable or writable by group or others (mode {mode:03o}); run: chmod 600 {path}"
    )]
    FileOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A symlink sits where simgate keeps a file of its own.
    #[error(
        "{path} is a symbolic link; simgate never follows one in its data directory: remove it \
         (rm {path}) and start again"
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a regular file (or a directory, for the data directory itself).
    #[error("{path} is not a {expected}")]
    WrongType {
        /// The path.
        path: PathBuf,
        /// "regular file" or "directory".
        expected: &'static str,
    },
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Who holds a lock, as far as its file tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder(pub Option<u32>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "PID {pid}"),
            None => f.write_str("PID unknown"),
        }
    }
}

impl DataDirError {
    fn io(path: &Path, source: io::Error) -> DataDirError {
        DataDirError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// For callers whose errors are `io::Error` (the key file, the store): the kind survives, so a
/// missing file still reads as `NotFound`.
impl From<DataDirError> for io::Error {
    fn from(e: DataDirError) -> io::Error {
        let kind = match &e {
            DataDirError::Io { source, .. } => source.kind(),
            DataDirError::Locked { .. } => io::ErrorKind::WouldBlock,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Creates `dir` with mode 0700 when it is missing (missing parents too), then checks that
/// group and others cannot write to it. A symlink naming the directory itself is followed:
/// that is the administrator's choice (systemd's `StateDirectory` may be one), unlike a
/// symlink planted at a file name inside it.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(DataDirError::io(dir, e)),
    }
    check_dir(dir)
}

/// Refuses a data directory that is not a directory or that group or others may write to.
pub fn check_dir(dir: &Path) -> Result<(), DataDirError> {
    let meta = std::fs::metadata(dir).map_err(|e| DataDirError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataDirError::WrongType {
            path: dir.to_path_buf(),
            expected: "directory",
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(DataDirError::DirOpen {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Creates a new file 0600 for writing; fails with `AlreadyExists` when anything (a symlink
/// included, which is never followed) is at `path`.
pub fn create_new(path: &Path) -> Result<File, DataDirError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| DataDirError::io(path, e))
}

/// Opens an existing secret file for reading: refused when it is a symlink, not a regular
/// file, or open to group or others. A missing file is an `Io` error of kind `NotFound`.
pub fn open_private(path: &Path) -> Result<File, DataDirError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refusal_of(path, e))?;
    check_open_file(path, &file)?;
    Ok(file)
}

/// Opens a file for appending, creating it 0600 when missing; refused like
/// [`open_private`].
pub fn open_append(path: &Path) -> Result<File, DataDirError> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refusal_of(path, e))?;
    check_open_file(path, &file)?;
    Ok(file)
}

/// Creates `path` 0600 when missing; refuses what is there when it is a symlink, not a regular
/// file, or open to group or others. For files another library opens by name (SQLite).
pub fn ensure_private(path: &Path) -> Result<(), DataDirError> {
    match create_new(path) {
        Ok(_) => Ok(()),
        Err(DataDirError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            check_private(path).map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Checks what is at `path` without following a symlink: `Ok(false)` when nothing is,
/// `Ok(true)` for a regular file only its owner can use, else the refusal.
pub fn check_private(path: &Path) -> Result<bool, DataDirError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(DataDirError::io(path, e)),
    };
    check_meta(path, &meta).map(|()| true)
}

fn check_open_file(path: &Path, file: &File) -> Result<(), DataDirError> {
    let meta = file.metadata().map_err(|e| DataDirError::io(path, e))?;
    check_meta(path, &meta)
}

fn check_meta(path: &Path, meta: &std::fs::Metadata) -> Result<(), DataDirError> {
    if meta.file_type().is_symlink() {
        return Err(DataDirError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !meta.is_file() {
        return Err(DataDirError::WrongType {
            path: path.to_path_buf(),
            expected: "regular file",
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER != 0 {
        return Err(DataDirError::FileOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// `O_NOFOLLOW` on a symlink fails with `ELOOP`; say what it means.
fn refusal_of(path: &Path, e: io::Error) -> DataDirError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        DataDirError::Symlink {
            path: path.to_path_buf(),
        }
    } else {
        DataDirError::io(path, e)
    }
}

/// An exclusive lock held until dropped; the file holds the holder's PID for the error the next
/// process prints. Dropping it removes the file (while still holding the lock).
#[derive(Debug)]
pub struct Lock {
    /// The locked open file; closing it releases the lock. Only held, never read.
    _file: Flock<File>,
    /// The lock file's path, removed on drop.
    path: PathBuf,
    /// Device and inode of the locked file: the path is only removed while it still names it.
    id: (u64, u64),
}

impl Lock {
    /// Takes the lock of the data directory `dir` (`<dir>/lock`).
    pub fn data_dir(dir: &Path) -> Result<Lock, DataDirError> {
        Lock::acquire(&dir.join(LOCK_FILE), "data directory", dir)
    }

    /// Takes the lock at `lock`, which protects `subject` (named in the error as `what`).
    /// Never waits: a held lock is an error naming the holder's PID.
    pub fn acquire(lock: &Path, what: &'static str, subject: &Path) -> Result<Lock, DataDirError> {
        // A holder that exits removes the file while we may have it open: we would then hold a
        // lock on a file nobody else can find. So retry until the locked file is the one at
        // the path.
        for _ in 0..100 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(lock)
                .map_err(|e| refusal_of(lock, e))?;
            let meta = file.metadata().map_err(|e| DataDirError::io(lock, e))?;
            if !meta.is_file() {
                return Err(DataDirError::WrongType {
                    path: lock.to_path_buf(),
                    expected: "regular file",
                });
            }
            let id = (meta.dev(), meta.ino());
            let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    return Err(DataDirError::Locked {
                        what,
                        subject: subject.to_path_buf(),
                        lock: lock.to_path_buf(),
                        holder: read_holder(&mut file),
                    });
                }
                Err((_, errno)) => return Err(DataDirError::io(lock, errno.into())),
            };
            match std::fs::symlink_metadata(lock) {
                Ok(m) if (m.dev(), m.ino()) == id => {}
                _ => continue,
            }
            let pid = format!("{}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(pid.as_bytes()))
                .map_err(|e| DataDirError::io(lock, e))?;
            return Ok(Lock {
                _file: file,
                path: lock.to_path_buf(),
                id,
            });
        }
        Err(DataDirError::io(
            lock,
            io::Error::other("the lock file keeps being replaced; is another process racing?"),
        ))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
        // `self._file` drops after this: unlock and close, so the file is gone before the lock.
    }
}

/// The PID the holder wrote. It writes right after locking, so a reader that came in between
/// waits a moment rather than report an unknown holder.
fn read_holder(file: &mut File) -> Holder {
    for _ in 0..25 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse::<u32>() {
                return Holder(Some(pid));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Holder(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_missing_directory_is_created_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // An existing owner-only or group-readable directory is accepted as it is.
        chmod(&dir, 0o750);
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o750);
    }

    #[test]
    fn a_directory_others_can_write_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in [0o777, 0o1777, 0o770, 0o702] {
            chmod(tmp.path(), bad);
            let e = prepare(tmp.path()).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, DataDirError::DirOpen { .. }), "{text}");
            assert!(text.contains(&tmp.path().display().to_string()), "{text}");
            assert!(text.contains(&format!("{bad:03o}")), "{text}");
            assert!(text.contains("chmod 700"), "{text}");
        }
        chmod(tmp.path(), 0o700);
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            check_dir(&file),
            Err(DataDirError::WrongType { .. })
        ));
    }

    #[test]
    fn new_files_are_owner_only_and_never_replace_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("secret");
        drop(create_new(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        assert!(matches!(
            create_new(&path),
            Err(DataDirError::Io { ref source, .. }) if source.kind() == io::ErrorKind::AlreadyExists
        ));
        let log = tmp.path().join("log");
        writeln!(open_append(&log).unwrap(), "one").unwrap();
        writeln!(open_append(&log).unwrap(), "two").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        assert_eq!(mode(&log), 0o600);
        ensure_private(&tmp.path().join("db")).unwrap();
        assert_eq!(mode(&tmp.path().join("db")), 0o600);
    }

    #[test]
    fn files_others_can_read_are_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("secret");
        std::fs::write(&path, "x").unwrap();
        for bad in [0o644, 0o640, 0o604, 0o620] {
            chmod(&path, bad);
            for e in [
                open_private(&path).unwrap_err(),
                open_append(&path).unwrap_err(),
                ensure_private(&path).unwrap_err(),
                check_private(&path).unwrap_err(),
            ] {
                let text = e.to_string();
                assert!(matches!(e, DataDirError::FileOpen { .. }), "{text}");
                assert!(text.contains(&format!("mode {bad:03o}")), "{text}");
                assert!(
                    text.contains(&format!("chmod 600 {}", path.display())),
                    "{text}"
                );
            }
        }
        chmod(&path, 0o600);
        open_private(&path).unwrap();
        assert!(check_private(&path).unwrap());
        assert!(!check_private(&tmp.path().join("absent")).unwrap());
        let missing = io::Error::from(open_private(&tmp.path().join("absent")).unwrap_err());
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        assert!(matches!(
            check_private(&tmp.path().join("d")),
            Err(DataDirError::WrongType { .. })
        ));
    }

    #[test]
    fn a_planted_symlink_is_refused_and_its_target_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        let dangling = tmp.path().join("nothing-here");
        std::fs::write(&target, "victim").unwrap();
        chmod(&target, 0o600);
        for to in [&target, &dangling] {
            let link = tmp.path().join("link");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(to, &link).unwrap();
            for e in [
                open_private(&link).unwrap_err(),
                open_append(&link).unwrap_err(),
                ensure_private(&link).unwrap_err(),
                check_private(&link).unwrap_err(),
                Lock::acquire(&link, "data directory", tmp.path()).unwrap_err(),
            ] {
                let text = e.to_string();
                assert!(matches!(e, DataDirError::Symlink { .. }), "{text}");
                assert!(text.contains("symbolic link"), "{text}");
            }
            assert!(matches!(
                create_new(&link),
                Err(DataDirError::Io { ref source, .. }) if source.kind() == io::ErrorKind::AlreadyExists
            ));
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "victim");
        assert!(!dangling.exists(), "nothing created through the link");
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Lock::data_dir(tmp.path()).unwrap();
        let lock_path = tmp.path().join(LOCK_FILE);
        assert_eq!(
            std::fs::read_to_string(&lock_path).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert_eq!(mode(&lock_path), 0o600);
        let e = Lock::data_dir(tmp.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, DataDirError::Locked { holder: Holder(Some(pid)), .. } if pid == std::process::id()),
            "{text}"
        );
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&tmp.path().display().to_string()), "{text}");
        drop(first);
        assert!(!lock_path.exists(), "a clean exit removes the lock file");
        let again = Lock::data_dir(tmp.path()).unwrap();
        drop(again);
    }

    #[test]
    fn a_lock_file_left_behind_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        // What a killed holder leaves: the file with its PID, but no lock (the kernel dropped it).
        std::fs::write(tmp.path().join(LOCK_FILE), "999999\n").unwrap();
        let lock = Lock::data_dir(tmp.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }
}
