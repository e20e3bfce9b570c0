//! Points where a test can hold a run, to make a race happen for certain instead of by luck.
//!
//! Compiled in only with the `test-hooks` cargo feature, which the test command enables
//! (`scripts/test`); in any other build [`barrier`] does nothing. A test sets
//! `BATCHSCORE_TEST_BARRIER=POINT:DIR:N`: every process that reaches `POINT` writes a file
//! named by its process id into `DIR`, then waits until `N` processes have, so that N runs
//! started together all stand at the same point before any goes on. After
//! [`BARRIER_TIMEOUT`] it goes on anyway, and the test's assertions say what went wrong.

use std::time::Duration;

/// How long a process waits at a barrier for the others.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable that names a barrier: `POINT:DIR:N`.
pub const BARRIER_VAR: &str = "BATCHSCORE_TEST_BARRIER";

/// Waits at `point` until as many processes as the barrier names have reached it.
pub async fn barrier(point: &str) {
    #[cfg(feature = "test-hooks")]
    if let Some((dir, count)) = std::env::var(BARRIER_VAR)
        .ok()
        .and_then(|v| parse(&v, point))
    {
        wait(&dir, count).await;
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = point;
}

/// The folder and the count of a barrier at `point`, from the variable's value.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
fn parse(value: &str, point: &str) -> Option<(std::path::PathBuf, usize)> {
    let rest = value.strip_prefix(point)?.strip_prefix(':')?;
    let (dir, count) = rest.rsplit_once(':')?;
    Some((dir.into(), count.parse().ok()?))
}

#[cfg(feature = "test-hooks")]
async fn wait(dir: &std::path::Path, count: usize) {
    let me = dir.join(std::process::id().to_string());
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&me, b"")) {
        tracing::error!(barrier = %dir.display(), error = %e, "cannot announce this process at the test barrier");
        return;
    }
    let started = std::time::Instant::now();
    loop {
        let arrived = std::fs::read_dir(dir).map(Iterator::count).unwrap_or(0);
        if arrived >= count {
            return;
        }
        if started.elapsed() > BARRIER_TIMEOUT {
            tracing::error!(barrier = %dir.display(), arrived, count, "gave up waiting at the test barrier");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_names_its_point_folder_and_count() {
        assert_eq!(
            parse("commit:/tmp/b:2", "commit"),
            Some(("/tmp/b".into(), 2))
        );
        assert_eq!(parse("commit:/tmp/b:2", "shard"), None);
        assert_eq!(parse("commit:/tmp/b", "commit"), None);
        assert_eq!(parse("commitx:/tmp/b:2", "commit"), None);
    }
}
