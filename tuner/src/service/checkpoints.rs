//! Trial checkpoints through the service, for workers that do not share
//! its store directory: a checkpoint directory travels as one tar stream
//! (`PUT`/`GET /api/worker/checkpoint?attempt=N`), of regular files and
//! directories only, with its length announced up front.
//!
//! What arrives is unpacked beside the stored checkpoint, checked to be
//! whole (every byte the length announced, a well-formed archive), synced,
//! and only then swapped in with one rename: a cut or damaged upload never
//! replaces a good checkpoint.

use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::queue::Queue;

/// The largest checkpoint a worker may send: the weights, optimizer state
/// and moving average of the biggest backbones fit many times over.
pub const MAX_CHECKPOINT_BYTES: u64 = 16 << 30;

#[derive(Debug, Error)]
pub enum TransferError {
    #[error("the checkpoint is {bytes} bytes, more than the {MAX_CHECKPOINT_BYTES} the service takes; put the service's store on a filesystem the workers share and start them with `bocb worker --shared-store`, which sends no checkpoints")]
    TooLarge { bytes: u64 },
    #[error("the service no longer knows this attempt; drop the trial")]
    Gone,
    #[error(
        "a checkpoint upload must say its length (Content-Length); send it with `bocb worker`"
    )]
    NoLength,
    #[error("the checkpoint upload is incomplete or damaged ({0}); the stored checkpoint is kept")]
    Damaged(String),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TransferError {
    let path = path.to_path_buf();
    move |source| TransferError::Io { what, path, source }
}

/// Stores the checkpoint archive `body` (of `length` bytes) of `attempt`'s
/// trial in the store, if whole and if the attempt still holds the trial
/// once it has arrived; anything else leaves the stored checkpoint as it was.
pub fn receive(
    queue: &Queue,
    attempt: u64,
    body: impl Read,
    length: Option<u64>,
) -> Result<(), TransferError> {
    let (experiment, trial) = queue.leased(attempt).map_err(|_| TransferError::Gone)?;
    let length = length.ok_or(TransferError::NoLength)?;
    if length > MAX_CHECKPOINT_BYTES {
        return Err(TransferError::TooLarge { bytes: length });
    }
    let target = queue.checkpoint_dir(&experiment, &trial);
    let staging = beside(&target, "upload", attempt);
    let parent = target.parent().expect("below the store");
    fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    // Left by a service that died during an upload of this attempt.
    let _ = fs::remove_dir_all(&staging);
    let stored = unpack(body, length, &staging).and_then(|()| {
        queue
            .while_leased(attempt, || replace(&staging, &target))
            .map_err(|_| TransferError::Gone)?
    });
    let _ = fs::remove_dir_all(&staging);
    if stored.is_ok() {
        queue.log(
            &trial,
            &format!("[service] attempt {attempt}: checkpoint stored ({length} bytes)"),
        );
    }
    stored
}

/// The checkpoint the store holds for `attempt`'s trial, as an archive
/// and its length; `None` when there is none.
pub fn send(queue: &Queue, attempt: u64) -> Result<Option<(File, u64)>, TransferError> {
    let (experiment, trial) = queue.leased(attempt).map_err(|_| TransferError::Gone)?;
    let target = queue.checkpoint_dir(&experiment, &trial);
    if !target.is_dir() {
        return Ok(None);
    }
    pack(&target, &beside(&target, "download", attempt)).map(Some)
}

/// Packs the checkpoint directory `dir` into a tar archive in an unnamed
/// file (made as `scratch`, removed at once), ready to be read from its start.
/// Returns the file and its length.
pub fn pack(dir: &Path, scratch: &Path) -> Result<(File, u64), TransferError> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(scratch)
        .map_err(io_error("create", scratch))?;
    // Open, the file lives on without its name; a crash leaves nothing behind.
    fs::remove_file(scratch).map_err(io_error("remove", scratch))?;
    let mut builder = tar::Builder::new(&mut file);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .and_then(|()| builder.finish())
        .map_err(io_error("pack the checkpoint", dir))?;
    drop(builder);
    let length = file
        .stream_position()
        .map_err(io_error("pack the checkpoint", dir))?;
    file.rewind()
        .map_err(io_error("pack the checkpoint", dir))?;
    Ok((file, length))
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Unpacks the archive of `length` bytes that `body` carries into `dest`,
/// which must not exist, and syncs what it wrote. Fails, leaving `dest` for
/// the caller to remove, when the body ends short or is not a whole archive
/// of regular files and directories.
pub fn unpack(body: impl Read, length: u64, dest: &Path) -> Result<(), TransferError> {
    if length > MAX_CHECKPOINT_BYTES {
        return Err(TransferError::TooLarge { bytes: length });
    }
    fs::create_dir(dest).map_err(io_error("create", dest))?;
    let damaged = |e: io::Error| TransferError::Damaged(e.to_string());
    let mut counted = Counted {
        inner: body.take(length),
        count: 0,
    };
    {
        let mut archive = tar::Archive::new(&mut counted);
        archive.set_preserve_permissions(false);
        archive.set_overwrite(false);
        for entry in archive.entries().map_err(damaged)? {
            let mut entry = entry.map_err(damaged)?;
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind.is_dir()) {
                return Err(TransferError::Damaged(format!(
                    "it holds a {kind:?} entry; a checkpoint is files and directories only"
                )));
            }
            if !entry.unpack_in(dest).map_err(damaged)? {
                return Err(TransferError::Damaged(
                    "an entry's path leads outside the checkpoint".to_string(),
                ));
            }
        }
    }
    // What follows the archive's end is padding; a body cut short ends early.
    io::copy(&mut counted, &mut io::sink()).map_err(damaged)?;
    if counted.count != length {
        return Err(TransferError::Damaged(format!(
            "{} of {length} bytes arrived",
            counted.count
        )));
    }
    sync_tree(dest)
}

/// Makes every file and directory under `dir` (and `dir`) durable.
fn sync_tree(dir: &Path) -> Result<(), TransferError> {
    for entry in fs::read_dir(dir).map_err(io_error("read", dir))? {
        let path = entry.map_err(io_error("read", dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_error("sync", &path))?;
        }
    }
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_error("sync", dir))
}

/// Puts the complete directory `staging` at `target` in one step: swapped
/// with the checkpoint there (whose files then go), or renamed when there
/// is none. A reader of `target` sees the old checkpoint or the new one.
pub fn replace(staging: &Path, target: &Path) -> Result<(), TransferError> {
    if target.exists() {
        exchange(staging, target).map_err(io_error("replace", target))?;
        if let Err(e) = fs::remove_dir_all(staging) {
            tracing::warn!(
                "cannot remove the replaced checkpoint {}: {e}",
                staging.display()
            );
        }
    } else {
        fs::rename(staging, target).map_err(io_error("create", target))?;
    }
    if let Some(parent) = target.parent() {
        File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(io_error("sync", parent))?;
    }
    Ok(())
}

/// Swaps two directories atomically (renameat2 with RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let status = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The bytes of an archive from [`pack`].
#[cfg(test)]
fn bytes_of(mut file: File) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    bytes
}

/// A unique name beside `path` for an upload or download of `attempt`.
pub fn beside(path: &Path, what: &str, attempt: u64) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{what}-{attempt}"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint directory like the trainer's, with a sub-directory.
    fn checkpoint(dir: &Path, epoch: u32) {
        fs::create_dir_all(dir.join("more")).unwrap();
        fs::write(
            dir.join("checkpoint.json"),
            format!("{{\"epoch\": {epoch}}}"),
        )
        .unwrap();
        fs::write(dir.join("state.safetensors"), vec![epoch as u8; 5000]).unwrap();
        fs::write(dir.join("more").join("x"), "x").unwrap();
    }

    fn read(dir: &Path) -> (String, Vec<u8>, String) {
        (
            fs::read_to_string(dir.join("checkpoint.json")).unwrap(),
            fs::read(dir.join("state.safetensors")).unwrap(),
            fs::read_to_string(dir.join("more").join("x")).unwrap(),
        )
    }

    #[test]
    fn a_packed_checkpoint_unpacks_whole_and_replaces_the_stored_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (source, stored) = (tmp.path().join("source"), tmp.path().join("stored"));
        checkpoint(&source, 1);
        let (file, length) = pack(&source, &tmp.path().join("scratch")).unwrap();
        assert!(!tmp.path().join("scratch").exists());
        let bytes = bytes_of(file);
        assert_eq!(bytes.len() as u64, length);
        let staging = beside(&stored, "upload", 7);
        assert_eq!(staging, tmp.path().join(".stored.upload-7"));
        unpack(&bytes[..], length, &staging).unwrap();
        replace(&staging, &stored).unwrap();
        assert_eq!(read(&stored), read(&source));
        assert!(!staging.exists());

        // A newer one is swapped in whole; the old one's files go.
        fs::remove_dir_all(&source).unwrap();
        checkpoint(&source, 2);
        let (file, length) = pack(&source, &tmp.path().join("scratch")).unwrap();
        unpack(&bytes_of(file)[..], length, &staging).unwrap();
        replace(&staging, &stored).unwrap();
        assert_eq!(read(&stored).0, "{\"epoch\": 2}");
        assert!(!staging.exists());
    }

    #[test]
    fn a_cut_or_damaged_upload_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("source");
        checkpoint(&source, 1);
        let (file, length) = pack(&source, &tmp.path().join("scratch")).unwrap();
        let bytes = bytes_of(file);
        // Cut within a file, at a file's end (a well-formed prefix), and
        // short of the padding after the archive's end.
        for cut in [700, 512 * 3, bytes.len() - 100] {
            let dest = tmp.path().join(format!("cut-{cut}"));
            let error = unpack(&bytes[..cut], length, &dest).unwrap_err();
            assert!(
                matches!(error, TransferError::Damaged(_)),
                "cut at {cut}: {error}"
            );
        }
        let mut garbled = bytes.clone();
        garbled[100..200].fill(0xff);
        let error = unpack(&garbled[..], length, &tmp.path().join("garbled")).unwrap_err();
        assert!(matches!(error, TransferError::Damaged(_)), "{error}");
        let error = unpack(
            &bytes[..],
            MAX_CHECKPOINT_BYTES + 1,
            &tmp.path().join("big"),
        );
        assert!(matches!(error, Err(TransferError::TooLarge { .. })));
    }

    #[test]
    fn links_and_paths_outside_the_checkpoint_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut link = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut link);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, "escape", "/etc").unwrap();
            builder.finish().unwrap();
        }
        let error = unpack(&link[..], link.len() as u64, &tmp.path().join("a")).unwrap_err();
        assert!(error.to_string().contains("Symlink"), "{error}");
    }
}
