//! Output paths, checked before any work: a command that would fail to write its result
//! (a missing folder, a folder in place of a file, a read-only folder) or overwrite one of
//! its own inputs says so before computing, not after.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// Checks each output `(flag, path)` (`None`: not asked for) against the command's input
/// files: the folder exists and takes a new file, the path is not a folder, and it is none
/// of the inputs.
pub fn check_outputs(outputs: &[(&str, Option<&Path>)], inputs: &[Option<&Path>]) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let inputs: Vec<(PathBuf, PathBuf)> = inputs
        .iter()
        .flatten()
        .filter_map(|p| canon(p).map(|c| (p.to_path_buf(), c)))
        .collect();
    // Outputs seen so far, as (flag, path, folder canonicalised + file name).
    let mut seen: Vec<(&str, &Path, PathBuf)> = Vec::new();
    for (flag, path) in outputs {
        let Some(path) = path else { continue };
        if path.as_os_str().is_empty() {
            bail!("{flag}: an empty path");
        }
        if path.is_dir() {
            bail!("{flag} {}: is a folder; give a file name", path.display());
        }
        let parent = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!(
                "{flag} {}: the folder {} does not exist (create it first)",
                path.display(),
                parent.display()
            );
        }
        // Two outputs on one file: the second would overwrite the first.
        if let (Some(folder), Some(name)) = (canon(&parent), path.file_name()) {
            let key = folder.join(name);
            if let Some((other, p, _)) = seen.iter().find(|(_, _, k)| *k == key) {
                bail!(
                    "{flag} {} and {other} {} are the same file; give each output its own",
                    path.display(),
                    p.display()
                );
            }
            seen.push((flag, path, key));
        }
        if let Some(c) = canon(path)
            && let Some((input, _)) = inputs.iter().find(|(_, ic)| *ic == c)
        {
            bail!(
                "{flag} {}: this is the input {}; writing would overwrite it",
                path.display(),
                input.display()
            );
        }
        // A folder we cannot write into fails now, not after the computation.
        let probe = parent.join(format!(".ntk-write-check-{}", std::process::id()));
        match std::fs::File::create(&probe) {
            Ok(_) => {
                std::fs::remove_file(&probe).ok();
            }
            Err(e) => bail!(
                "{flag} {}: cannot write into {}: {e}",
                path.display(),
                parent.display()
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_missing_folders_folders_and_inputs() {
        let dir = std::env::temp_dir().join(format!("ntk-outputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("x.npy");
        std::fs::write(&input, b"x").unwrap();
        let ok = dir.join("K.npy");
        assert!(check_outputs(&[("--out", Some(&ok))], &[Some(&input)]).is_ok());
        // One file for two outputs, spelled two ways.
        let again = dir.join(".").join("K.npy");
        let e = check_outputs(&[("--out", Some(&ok)), ("--plot", Some(&again))], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--plot") && e.contains("same file"), "{e}");
        let missing = dir.join("nope/K.npy");
        let e = check_outputs(&[("--out", Some(&missing))], &[]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_outputs(&[("--out", Some(&dir))], &[]).unwrap_err();
        assert!(e.to_string().contains("is a folder"), "{e}");
        let e = check_outputs(&[("--plot", Some(&input))], &[Some(&input)]).unwrap_err();
        assert!(e.to_string().contains("overwrite"), "{e}");
        // Through another spelling of the same file.
        let other = dir.join(".").join("x.npy");
        assert!(check_outputs(&[("--out", Some(&other))], &[Some(&input)]).is_err());
        assert!(check_outputs(&[("--out", None)], &[]).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
