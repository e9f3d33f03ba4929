//! A message held while it is delivered to several destinations: in memory up to a
//! limit, then in an unlinked temporary file, so that memory stays constant in message
//! size (a 100 MB attachment costs the limit, not 100 MB) and nothing outlives a crash.
//!
//! The spool is not a queue: the delivery hook answers Postfix only after every
//! destination took the message, so Postfix keeps responsibility until then
//! (SECURITY-CASES §4 rule 1).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt, ReadBuf};

/// A message being written, then read back any number of times.
pub struct Spool {
    memory: BytesMut,
    memory_limit: usize,
    dir: PathBuf,
    file: Option<File>,
    len: u64,
}

impl Spool {
    /// A spool keeping up to `memory_limit` bytes in memory, then files in `dir`.
    pub fn new(memory_limit: usize, dir: &Path) -> Self {
        Self {
            memory: BytesMut::new(),
            memory_limit,
            dir: dir.to_owned(),
            file: None,
            len: 0,
        }
    }

    /// Appends bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len += bytes.len() as u64;
        if self.file.is_none() && self.memory.len() + bytes.len() <= self.memory_limit {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let dir = self.dir.clone();
                let std_file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                    .await
                    .map_err(io::Error::other)??;
                let mut file = File::from_std(std_file);
                file.write_all(&self.memory).await?;
                self.memory = BytesMut::new();
                self.file.insert(file)
            }
        };
        file.write_all(bytes).await
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the message went to disk.
    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// A reader over everything written, from the start. Each call is independent.
    pub async fn reader(&mut self) -> io::Result<SpoolReader> {
        match &mut self.file {
            None => Ok(SpoolReader::Memory(self.memory.clone().freeze())),
            Some(file) => {
                file.flush().await?;
                let mut clone = file.try_clone().await?;
                clone.seek(io::SeekFrom::Start(0)).await?;
                Ok(SpoolReader::File(clone))
            }
        }
    }
}

/// Reads a spooled message.
pub enum SpoolReader {
    Memory(Bytes),
    File(File),
}

impl AsyncRead for SpoolReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SpoolReader::Memory(bytes) => {
                let n = bytes.len().min(buf.remaining());
                buf.put_slice(&bytes.split_to(n));
                Poll::Ready(Ok(()))
            }
            SpoolReader::File(file) => Pin::new(file).poll_read(cx, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    async fn read_all(spool: &mut Spool) -> Vec<u8> {
        let mut out = Vec::new();
        spool
            .reader()
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn small_messages_stay_in_memory_large_ones_go_to_disk_and_read_back_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(10, dir.path());
        spool.write(b"hello").await.unwrap();
        assert!(!spool.on_disk());
        assert_eq!(read_all(&mut spool).await, b"hello");
        spool.write(b" world, longer").await.unwrap();
        assert!(spool.on_disk());
        assert_eq!(spool.len(), 19);
        assert_eq!(read_all(&mut spool).await, b"hello world, longer");
        assert_eq!(read_all(&mut spool).await, b"hello world, longer");
        // The file is unlinked: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
