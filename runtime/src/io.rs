//! hyper's I/O as futures-io, for async-tungstenite: the upgraded socket of a
//! WebSocket (`hyper::upgrade::Upgraded`) is hyper I/O on every runtime, and
//! async-tungstenite reads and writes futures-io. One safe adapter instead of
//! a runtime's two (`TokioIo` then `TokioAdapter`).
//!
//! And hyper's I/O as tokio's I/O traits ([`RedisIo`]), for the redis crate,
//! whose connections take a tokio::io stream on every runtime: so that weir
//! connects to Redis with its own runtime's socket and runs the connection's
//! driver as its own task (with smol-comp the redis crate would run it on
//! smol's global executor, a thread of its own).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use hyper::rt::ReadBuf;

/// `T`'s hyper I/O as futures-io.
#[derive(Debug)]
pub(crate) struct HyperIo<T>(pub(crate) T);

impl<T: hyper::rt::Read + Unpin> AsyncRead for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        // An initialized slice: no copy and no `unsafe`.
        let mut read = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, read.unfilled()))?;
        Poll::Ready(Ok(read.filled().len()))
    }
}

/// The writing half of an adapter: every call handed to hyper's `Write`
/// (`$close` is the trait's name for hyper's `poll_shutdown`).
macro_rules! write_via_hyper {
    ($adapter:ident, $trait:path, $close:ident) => {
        impl<T: hyper::rt::Write + Unpin> $trait for $adapter<T> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.0).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.0).poll_flush(cx)
            }

            fn $close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.0).poll_shutdown(cx)
            }
        }
    };
}

write_via_hyper!(HyperIo, AsyncWrite, poll_close);

/// `T`'s hyper I/O as tokio's `AsyncRead` / `AsyncWrite` (the traits only; no
/// tokio runtime is involved).
#[derive(Debug)]
pub(crate) struct RedisIo<T>(pub(crate) T);

impl<T: hyper::rt::Read + Unpin> tokio::io::AsyncRead for RedisIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut read = ReadBuf::new(buf.initialize_unfilled());
        ready!(Pin::new(&mut self.0).poll_read(cx, read.unfilled()))?;
        let n = read.filled().len();
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

write_via_hyper!(RedisIo, tokio::io::AsyncWrite, poll_shutdown);
