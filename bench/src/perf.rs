//! `perf record -g -p <redis-server>` around a run, for finding where a slow
//! CHECK spends its time (`--perf`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::util::Result;

pub struct Recording {
    child: Child,
    data: PathBuf,
    text: PathBuf,
}

impl Recording {
    pub fn start(pid: u32, dir: &Path, name: &str) -> Result<Recording> {
        let data = dir.join(format!("perf-{name}.data"));
        let text = dir.join(format!("perf-{name}.txt"));
        let child = Command::new("perf")
            .args(["record", "-g", "-F", "999", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("perf: {e}"))?;
        // perf needs a moment to attach.
        thread::sleep(Duration::from_millis(300));
        Ok(Recording { child, data, text })
    }

    /// Stops recording (SIGINT, as Ctrl-C) and writes the report.
    pub fn finish(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let report = Command::new("perf")
            .args([
                "report",
                "--no-children",
                "--sort",
                "comm,dso,symbol",
                "--stdio",
                "-g",
                "none",
                "--percent-limit",
                "0.5",
                "-i",
            ])
            .arg(&self.data)
            .output()?;
        std::fs::write(&self.text, &report.stdout)?;
        eprintln!(
            "    perf: {} (report: {})",
            self.data.display(),
            self.text.display()
        );
        Ok(())
    }
}
