//! An execution environment's log: its stdout and stderr (one pipe, as Lambda merges them)
//! read on a thread of its own into the log store, line by line, with veeps' own START, END
//! and REPORT lines written in order among them. The END of an invocation first drains
//! what the function wrote before answering, so an invocation's lines all precede its END,
//! and the tail of those lines (`LogType: Tail`) is complete.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use veeps_obs::logs::LogLine;

/// The most of an invocation's log a `LogType: Tail` answer carries (Lambda's 4 KB).
pub const TAIL_BYTES: usize = 4096;
/// Lines longer than this are split.
const MAX_LINE: usize = 16 * 1024;

/// Where lines go.
pub type Sink = Arc<dyn Fn(LogLine) + Send + Sync>;

enum Msg {
    /// An invocation starts: write this line and start a new tail.
    Start(String),
    /// It ended: drain the pipe, write these lines, answer the tail.
    End(Vec<String>, tokio::sync::oneshot::Sender<String>),
    /// Write these lines (no invocation).
    Lines(Vec<String>),
}

/// The reader of one environment's output.
pub struct Log {
    tx: std::sync::mpsc::Sender<Msg>,
    wake: Arc<std::os::unix::net::UnixStream>,
}

/// Writes an invocation's START line: handed to the Runtime API, which writes it before
/// the runtime gets the event, so nothing the function prints for it comes first.
#[derive(Clone)]
pub struct Starter {
    tx: std::sync::mpsc::Sender<Msg>,
    wake: Arc<std::os::unix::net::UnixStream>,
}

impl Starter {
    /// An invocation starts, with this START line.
    pub fn start(&self, line: String) {
        use std::io::Write;
        if self.tx.send(Msg::Start(line)).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }
}

struct Reader {
    out: std::io::PipeReader,
    wake: std::os::unix::net::UnixStream,
    rx: std::sync::mpsc::Receiver<Msg>,
    sink: Sink,
    env: String,
    group: String,
    source: String,
    partial: Vec<u8>,
    tail: String,
    eof: bool,
}

impl Log {
    /// Starts reading `out` (the write ends closed in this process already), writing lines
    /// under `env`, `group` and `source`.
    pub fn start(
        out: std::io::PipeReader,
        sink: Sink,
        env: &str,
        group: &str,
        source: &str,
    ) -> std::io::Result<Log> {
        let (wake_r, wake_w) = std::os::unix::net::UnixStream::pair()?;
        wake_r.set_nonblocking(true)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut r = Reader {
            out,
            wake: wake_r,
            rx,
            sink,
            env: env.into(),
            group: group.into(),
            source: source.into(),
            partial: vec![],
            tail: String::new(),
            eof: false,
        };
        std::thread::Builder::new()
            .name(format!("fn-log-{source}"))
            .spawn(move || r.run())?;
        Ok(Log {
            tx,
            wake: Arc::new(wake_w),
        })
    }

    /// What writes START lines.
    pub fn starter(&self) -> Starter {
        Starter {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }

    fn send(&self, m: Msg) {
        use std::io::Write;
        if self.tx.send(m).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }

    /// An invocation starts, with this START line.
    pub fn start_invocation(&self, line: String) {
        self.send(Msg::Start(line));
    }

    /// An invocation ended: what it wrote is drained first, then `lines` (END, REPORT) are
    /// written; answers the invocation's tail (at most [`TAIL_BYTES`]).
    pub async fn end_invocation(&self, lines: Vec<String>) -> String {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::End(lines, tx));
        rx.await.unwrap_or_default()
    }

    /// [`Log::end_invocation`] without waiting for the tail.
    pub fn end_invocation_unseen(&self, lines: Vec<String>) {
        let (tx, _) = tokio::sync::oneshot::channel();
        self.send(Msg::End(lines, tx));
    }

    /// Writes lines of veeps' own (an environment's end, say).
    pub fn note(&self, lines: Vec<String>) {
        self.send(Msg::Lines(lines));
    }
}

impl Reader {
    fn run(&mut self) {
        let fds = [self.out.as_raw_fd(), self.wake.as_raw_fd()];
        loop {
            let ready = if self.eof {
                // Only messages are left: wait for them.
                match self.rx.recv() {
                    Ok(m) => {
                        self.handle(m);
                        continue;
                    }
                    Err(_) => return,
                }
            } else {
                veeps_sys::proc::readable(&fds, 1000)
            };
            if ready[1] {
                let mut b = [0u8; 64];
                while matches!(self.wake.read(&mut b), Ok(n) if n > 0) {}
            }
            // Messages first: a START precedes whatever is in the pipe with it, and an END
            // drains the pipe itself before its lines.
            loop {
                match self.rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        // The environment is gone: read to the end, then stop.
                        while !self.eof {
                            if veeps_sys::proc::readable(&fds[..1], 1000)[0] {
                                self.read_some();
                            } else {
                                break;
                            }
                        }
                        self.flush_partial();
                        return;
                    }
                }
            }
            if ready[0] {
                self.read_some();
            }
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Start(line) => {
                // What is still in the pipe was written after the event was handed over:
                // it is the invocation's, read after this line.
                self.tail.clear();
                self.emit(line);
            }
            Msg::End(lines, ack) => {
                self.drain();
                self.flush_partial();
                for l in lines {
                    self.emit(l);
                }
                let _ = ack.send(std::mem::take(&mut self.tail));
            }
            Msg::Lines(lines) => {
                self.drain();
                for l in lines {
                    self.emit(l);
                }
            }
        }
    }

    /// Reads whatever the pipe holds now.
    fn drain(&mut self) {
        let fd = [self.out.as_raw_fd()];
        while !self.eof && veeps_sys::proc::readable(&fd, 0)[0] {
            self.read_some();
        }
    }

    fn read_some(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        match self.out.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.eof = true;
                self.flush_partial();
            }
            Ok(n) => {
                self.partial.extend_from_slice(&buf[..n]);
                while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
                    let mut line: Vec<u8> = self.partial.drain(..=i).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    self.emit(String::from_utf8_lossy(&line).into_owned());
                }
                while self.partial.len() > MAX_LINE {
                    let rest = self.partial.split_off(MAX_LINE);
                    let line = std::mem::replace(&mut self.partial, rest);
                    self.emit(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
    }

    /// A last line without its newline is a line.
    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(String::from_utf8_lossy(&line).into_owned());
        }
    }

    fn emit(&mut self, text: String) {
        self.tail.push_str(&text);
        self.tail.push('\n');
        if self.tail.len() > TAIL_BYTES {
            let mut cut = self.tail.len() - TAIL_BYTES;
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
        (self.sink)(LogLine {
            ts: veeps_sys::now_ms() as i64,
            env: self.env.clone(),
            group: self.group.clone(),
            source: self.source.clone(),
            stream: "stdout".into(),
            text,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    #[tokio::test]
    async fn lines_keep_their_order_and_an_unfinished_line_counts() {
        let (r, mut w) = std::io::pipe().unwrap();
        let got = Arc::new(Mutex::new(Vec::<String>::new()));
        let g = got.clone();
        let log = Log::start(
            r,
            Arc::new(move |l: LogLine| g.lock().unwrap().push(l.text)),
            "e",
            "/aws/lambda/f",
            "1",
        )
        .unwrap();
        log.start_invocation("START".into());
        w.write_all(b"one\ntwo\xff\r\nno newline").unwrap();
        let tail = log.end_invocation(vec!["END".into()]).await;
        assert_eq!(tail, "START\none\ntwo\u{fffd}\nno newline\nEND\n");
        log.start_invocation("START 2".into());
        w.write_all(&vec![b'x'; 3 * TAIL_BYTES]).unwrap();
        let tail = log.end_invocation(vec!["END 2".into()]).await;
        assert!(
            tail.len() <= TAIL_BYTES && tail.ends_with("xx\nEND 2\n"),
            "{tail}"
        );
        drop(w);
        drop(log);
        let lines = got.lock().unwrap().clone();
        assert_eq!(
            &lines[..5],
            ["START", "one", "two\u{fffd}", "no newline", "END"]
        );
        assert_eq!(lines.last().unwrap(), "END 2");
    }
}
