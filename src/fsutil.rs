//! Writing results so that nothing is ever half-written.
//!
//! Single files are written to a temporary file in the same folder and renamed into place;
//! output folders are filled as a hidden sibling folder and moved into place when complete
//! ([`StagedDir`]). An interrupted run leaves at most a hidden `.rnnlab-tmp-*` folder, never a
//! half-written result, and a finished result is replaced only by a complete one.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    // Temporary files are created private (0600); results are ordinary files (0644).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.write_all(bytes)
        .and_then(|_| tmp.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Fails now, with the error [`write_atomic`] would give later, if `path` cannot be written:
/// for commands that measure for minutes before they write their one file. Leaves nothing
/// behind.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!("cannot write {}: it is a folder", path.display());
    }
    temp_beside(path).map(drop)
}

/// A temporary file in the folder of `path` (removed when dropped).
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        anyhow::bail!(
            "cannot write {}: there is no folder {}",
            path.display(),
            dir.display()
        );
    }
    tempfile::Builder::new()
        .prefix(".rnnlab-tmp-")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "cannot write {}: folder {} is not writable",
                path.display(),
                dir.display()
            )
        })
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An output folder under construction: files go into a hidden temporary sibling of the
/// final folder, and [`StagedDir::commit`] moves it into place (replacing an older result
/// only then). Dropped without commit, the temporary folder is deleted, and so are the
/// parent folders it had to create (if they are still empty).
pub struct StagedDir {
    tmp: Option<tempfile::TempDir>,
    target: PathBuf,
    /// The parent folders `new` created, innermost first.
    created: Vec<PathBuf>,
}

impl StagedDir {
    /// Prepares to write the folder `target` (its parent is created if needed).
    pub fn new(target: &Path) -> Result<StagedDir> {
        if target.is_file() {
            anyhow::bail!("--out {} is a file, not a folder", target.display());
        }
        let parent = parent_dir(target);
        let created: Vec<PathBuf> = parent
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create output folder {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".rnnlab-tmp-")
            .tempdir_in(parent)
            .map_err(|e| {
                // (tempfile's text ends in " at path" and the temporary folder, which never
                // came to exist: not worth showing)
                let text = e.to_string();
                let reason = text.split(" at path ").next().unwrap_or(&text).to_string();
                anyhow::anyhow!("cannot write into {}: {reason}", parent.display())
            })?;
        Ok(StagedDir {
            tmp: Some(tmp),
            target: target.to_path_buf(),
            created,
        })
    }

    /// Where to write files now.
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().expect("not committed").path()
    }

    /// The final location.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the finished folder into place, replacing any older one.
    pub fn commit(mut self) -> Result<PathBuf> {
        let tmp = self.tmp.take().expect("not committed").keep();
        if self.target.exists() {
            let old = tmp.with_extension("old");
            std::fs::rename(&self.target, &old)
                .with_context(|| format!("cannot replace {}", self.target.display()))?;
            std::fs::rename(&tmp, &self.target)
                .with_context(|| format!("cannot move results into {}", self.target.display()))?;
            std::fs::remove_dir_all(&old).ok();
        } else {
            std::fs::rename(&tmp, &self.target)
                .with_context(|| format!("cannot move results into {}", self.target.display()))?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            drop(tmp); // deletes the temporary folder
            for dir in &self.created {
                if std::fs::remove_dir(dir).is_err() {
                    break; // not empty (something else wrote there) or gone: keep the rest
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_dir_appears_only_on_commit() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        let staged = StagedDir::new(&target).unwrap();
        std::fs::write(staged.path().join("a.csv"), "x").unwrap();
        assert!(!target.exists());
        staged.commit().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a.csv")).unwrap(), "x");

        // A second, abandoned run leaves the first result untouched and no debris.
        let staged = StagedDir::new(&target).unwrap();
        std::fs::write(staged.path().join("b.csv"), "y").unwrap();
        drop(staged);
        assert!(!target.join("b.csv").exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    /// An abandoned run removes the parent folders it created, but no folder that existed
    /// before or that something else has written into.
    #[test]
    fn abandoned_staged_dir_removes_the_parents_it_created() {
        let root = tempfile::tempdir().unwrap();
        drop(StagedDir::new(&root.path().join("a/b/out")).unwrap());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

        let staged = StagedDir::new(&root.path().join("a/b/out")).unwrap();
        std::fs::write(root.path().join("a/note.txt"), "kept").unwrap();
        drop(staged);
        assert!(!root.path().join("a/b").exists());
        assert!(root.path().join("a/note.txt").exists());

        let staged = StagedDir::new(&root.path().join("a/c/out")).unwrap();
        staged.commit().unwrap();
        assert!(root.path().join("a/c/out").is_dir());
    }

    /// The up-front check fails for a missing folder and for a folder given as the file, and
    /// passes for a writable place without leaving anything there.
    #[test]
    fn check_writable_fails_early_and_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let e = check_writable(&root.path().join("no/such/dir/x.csv")).unwrap_err();
        assert!(e.to_string().contains("there is no folder"), "{e}");
        let e = check_writable(root.path()).unwrap_err();
        assert!(e.to_string().contains("it is a folder"), "{e}");
        check_writable(&root.path().join("x.csv")).unwrap();
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
