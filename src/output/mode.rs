//! The permissions of the local files and folders a run creates (`[output] file_mode`, 0600
//! under `[privacy]`).
//!
//! They are set through the process's umask, once, before anything is written: every file and
//! folder a run creates locally (the staging folder, parts, `_rejected/`, the manifest, the
//! markers, a sharded or resumable run's folder, the run history's `_LATEST`) is created with
//! at most these bits, at `open(2)`/`mkdir(2)` time, with no moment where it is more open.
//! That covers the files `object_store`'s local store writes too, which take no mode.

/// The mode of the folders that go with files of `file_mode`: each read bit gets its execute
/// bit (0640 gives 0750).
pub fn folder_mode(file_mode: u32) -> u32 {
    file_mode | ((file_mode & 0o444) >> 2)
}

/// Makes the files this process creates `file_mode` (from 0666) and its folders the matching
/// [`folder_mode`] (from 0777). `None` leaves the umask as it is.
pub fn apply(file_mode: Option<u32>) {
    let Some(mode) = file_mode else {
        return;
    };
    let mask = !folder_mode(mode) & 0o777;
    // SAFETY: umask(2) only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
    tracing::debug!(
        file_mode = format!("{mode:04o}"),
        folder_mode = format!("{:04o}", folder_mode(mode)),
        "local files and folders are created with these permissions"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_get_the_execute_bits_of_their_read_bits() {
        assert_eq!(folder_mode(0o600), 0o700);
        assert_eq!(folder_mode(0o640), 0o750);
        assert_eq!(folder_mode(0o644), 0o755);
        assert_eq!(folder_mode(0o660), 0o770);
        // The files: 0666 less the mask of the folders' mode.
        for m in [0o600, 0o640, 0o644, 0o660, 0o666] {
            assert_eq!(0o666 & !(!folder_mode(m) & 0o777), m);
        }
    }
}
