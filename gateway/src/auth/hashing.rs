//! Password checks on their own threads, at a low CPU priority.
//!
//! A password hash is slow on purpose (argon2, bcrypt: tens to hundreds of milliseconds of one
//! core). Run on the async workers they would stall proxying; run on tokio's blocking pool they
//! still compete with the proxy workers for the cores as equals. Here they run on a few threads
//! of their own that lower their scheduling priority once, at start (nice 10: under Linux's
//! scheduler a nice-0 proxy worker gets about nine tenths of a contended core and preempts a
//! hash as soon as it has work). A hash therefore takes the cores' idle time first, and a login
//! storm slows the logins rather than the proxied requests. Raising the nice value needs no
//! privilege; lowering it again would, which is why these threads do nothing else.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// How much lower the hashing threads' priority is than the process's: 10 nice steps (nice
/// values run from -20 to 19, 0 being the default).
pub const HASHING_NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of low-priority threads that run password checks one at a time each; the
/// threads stop when the pool is dropped.
pub struct HashingPool {
    jobs: Sender<Job>,
}

impl HashingPool {
    /// Starts `threads` hashing threads (at least one). Start-up only: a thread that cannot be
    /// started is a broken machine.
    pub fn start(threads: usize) -> HashingPool {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password check {i}"))
                .spawn(move || run(&queue))
                .expect("start a password-check thread");
        }
        HashingPool { jobs }
    }

    /// Runs `check` on one of the pool's threads and waits for its answer without blocking
    /// the caller's thread. `None` only if the pool's threads are gone.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(check());
        });
        self.jobs.send(job).ok()?;
        answered.await.ok()
    }
}

fn run(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Lowers the calling thread's priority by [`HASHING_NICENESS`] from whatever the process runs
/// at (the value stops at 19). On Linux `setpriority` with `PRIO_PROCESS` and 0 changes the
/// calling thread only; elsewhere it would change the whole process, so it is left alone there.
/// If the system refuses, checks run at normal priority, as they did before: worth a warning,
/// not a failure.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: getpriority and setpriority read no memory of ours; they read and change this
    // thread's nice value. (getpriority's -1 is a valid value here: asking about the calling
    // thread cannot fail.)
    let status = unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (current + HASHING_NICENESS).min(19))
    };
    if status != 0 {
        log::warn!(
            "password checks run at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, from /proc (field 19 of its stat line).
    fn own_nice() -> i32 {
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn checks_run_off_the_caller_at_low_priority_and_the_caller_keeps_its_own() {
        let before = own_nice();
        let pool = HashingPool::start(2);
        let caller = std::thread::current().id();
        let (thread, nice) = pool
            .run(|| (std::thread::current().id(), own_nice()))
            .await
            .unwrap();
        assert_ne!(thread, caller);
        assert_eq!(nice, (before + HASHING_NICENESS).min(19));
        assert_eq!(own_nice(), before, "the caller's priority is untouched");
    }

    #[tokio::test]
    async fn concurrent_checks_all_get_their_own_answer() {
        let pool = Arc::new(HashingPool::start(2));
        let answers = (0..16u64).map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || i * i).await })
        });
        for (i, answer) in answers.enumerate() {
            assert_eq!(answer.await.unwrap(), Some((i * i) as u64));
        }
    }
}
