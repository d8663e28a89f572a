//! Length-prefixed frames on every protocol: a u32 big-endian length, then the bytes,
//! checked against the protocol's limit before anything is allocated.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

use super::{Protocol, RefusedFrames};

/// Length-prefixed frames: a u32 big-endian length, then the bytes. Inbound requests that
/// announce more than the limit are refused before anything is allocated, and counted.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    pub(super) max: usize,
    pub(super) protocol: Protocol,
    pub(super) refused: Arc<RefusedFrames>,
}

impl FrameCodec {
    async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
        &self,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = proto::codec::check_frame_len(u64::from(u32::from_be_bytes(len)), self.max)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(
        &self,
        io: &mut T,
        bytes: Vec<u8>,
    ) -> io::Result<()> {
        if bytes.len() > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {} bytes exceeds {}", bytes.len(), self.max),
            ));
        }
        io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
        io.write_all(&bytes).await?;
        io.close().await
    }
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let frame = self.read_frame(io).await;
        if let Err(e) = &frame {
            // libp2p does not report a failed request read as an event: count it here.
            if e.kind() == io::ErrorKind::InvalidData {
                self.refused.0[RefusedFrames::index(self.protocol)].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(protocol = self.protocol.as_str(), %e, "inbound frame refused");
            }
        }
        frame
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, res).await
    }
}
