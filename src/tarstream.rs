//! Producing a tar (or any byte stream) on a blocking thread as an async stream of chunks.
//!
//! Build contexts and image archives can be large; they are written with the synchronous `tar`
//! crate on a blocking thread and handed to the HTTP body or `docker exec` stdin chunk by chunk,
//! so they are never held in memory whole and the consumer's pace limits the producer.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

const CHUNK: usize = 256 * 1024;

/// The write end: buffers up to [`CHUNK`] bytes, then blocks until the consumer takes them.
pub struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader stopped reading")
        })
    }
}

/// The read end, a `Stream` of chunks.
pub struct ByteStream(mpsc::Receiver<std::io::Result<Bytes>>);

impl futures_util::Stream for ByteStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Run `produce` on a blocking thread, writing into a [`ChannelWriter`]. The writer must be
/// flushed by `produce` (e.g. `tar::Builder::into_inner` then `flush`). A failure ends the
/// stream with the error and is also returned by the join handle.
pub fn spawn<F>(produce: F) -> (ByteStream, tokio::task::JoinHandle<std::io::Result<()>>)
where
    F: FnOnce(ChannelWriter) -> std::io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let handle = tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = produce(sink);
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
        }
        result
    });
    (ByteStream(rx), handle)
}
