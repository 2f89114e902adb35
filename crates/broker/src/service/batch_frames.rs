//! The two calls that carry record batches, `ProduceMany` requests and `Fetch` answers, read
//! and written as HTTP/2 frames by the broker itself rather than by tonic.
//!
//! tonic copies every DATA frame of a request into a buffer of its own before decoding it, and
//! encodes every answer into one buffer: a copy of every byte produced, and of every byte
//! fetched. Here a produce request's batches reach the log as slices of the frames h2 read
//! from the socket ([`strata_proto::frames::read_unary`]), and a fetch answer's large batches,
//! slices of the log's mapped segments, go to h2 as they are, in frames of their own
//! ([`strata_proto::frames::ok_response_with_batches`]): the socket's copy is their only one.
//! Smaller batches are copied into one buffer with the rest of the answer, once.
//!
//! Every other call goes to tonic, and so does a request whose message is compressed
//! (`grpc-encoding`), which tonic refuses: the server enables no compression.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use strata_proto::broker_server::{Broker, BrokerServer};
use strata_proto::calls::{decode_request, is_compressed, read_message, read_request, respond};
use strata_proto::frames::{BatchesGo, ok_response_with_batches};
use strata_proto::{FetchRequest, ProduceManyRequest};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};

use super::BrokerService;

const PRODUCE_MANY_PATH: &str = "/strata.v1.Broker/ProduceMany";
const FETCH_PATH: &str = "/strata.v1.Broker/Fetch";
/// A fetch request's largest message: a topic name and four numbers.
const MAX_FETCH_REQUEST: usize = 64 * 1024;
/// Partition entries a request may carry: every partition of the largest topic ten times
/// over. Counted in the encoded message before it is decoded, because each entry decodes into
/// a `PartitionBatches` with a `String` of its own: a 64 MiB request of 2-byte entries would
/// otherwise become ~32 M of them, gigabytes.
pub(crate) const MAX_REQUEST_PARTITIONS: usize = 10 * crate::topics::MAX_PARTITIONS as usize;

/// The broker's gRPC service, with `ProduceMany` and `Fetch` taken before tonic sees them.
#[derive(Debug, Clone)]
pub(crate) struct BatchFrames {
    tonic: BrokerServer<BrokerService>,
    service: Arc<BrokerService>,
    max_request: usize,
}

impl BatchFrames {
    /// `tonic` serves every other call; `max_request` bounds a request's message, as tonic's
    /// `max_decoding_message_size` does for them.
    pub(crate) fn new(service: BrokerService, max_request: usize) -> BatchFrames {
        let service = Arc::new(service);
        let tonic = BrokerServer::from_arc(service.clone())
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(usize::MAX);
        BatchFrames { tonic, service, max_request }
    }
}

impl tonic::server::NamedService for BatchFrames {
    const NAME: &'static str = strata_proto::broker_server::SERVICE_NAME;
}

impl Service<http::Request<Body>> for BatchFrames {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.service.clone();
        match request.uri().path() {
            _ if is_compressed(&request) => self.tonic.call(request),
            PRODUCE_MANY_PATH => {
                let max_request = self.max_request;
                Box::pin(async move { Ok(produce_many(&service, request, max_request).await) })
            }
            FETCH_PATH => Box::pin(async move { Ok(fetch(&service, request).await) }),
            _ => self.tonic.call(request),
        }
    }
}

async fn fetch(service: &BrokerService, request: http::Request<Body>) -> http::Response<Body> {
    let request = match read_request::<FetchRequest>(request, MAX_FETCH_REQUEST).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let runs = request.get_ref().runs;
    match service.fetch(request).await {
        Ok(response) => {
            let mut head = response.into_inner();
            // Each field where prost writes it: batches first, runs after every other.
            let (tag, field, order) = if runs {
                (FETCH_RUNS_TAG, &mut head.runs, BatchesGo::Last)
            } else {
                (FETCH_BATCHES_TAG, &mut head.batches, BatchesGo::First)
            };
            let batches = std::mem::take(field);
            ok_response_with_batches(&head, tag, &batches, order)
        }
        Err(status) => status.into_http(),
    }
}

/// The tags of `FetchResponse.batches` and `FetchResponse.runs` (`proto/strata/v1/client.proto`).
const FETCH_BATCHES_TAG: u32 = 1;
const FETCH_RUNS_TAG: u32 = 4;

async fn produce_many(
    service: &BrokerService,
    request: http::Request<Body>,
    max_request: usize,
) -> http::Response<Body> {
    let (parts, message) = match read_message(request, max_request).await {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    match partition_entries(message.clone()) {
        Ok(entries) if entries > MAX_REQUEST_PARTITIONS => {
            return Status::invalid_argument(format!(
                "a produce request carries at most {MAX_REQUEST_PARTITIONS} partition entries, not {entries}"
            ))
            .into_http();
        }
        Ok(_) => {}
        Err(err) => return Status::internal(err.to_string()).into_http(),
    }
    match decode_request::<ProduceManyRequest>(parts, message) {
        Ok(request) => respond(service.produce_many(request).await),
        Err(status) => status.into_http(),
    }
}

/// How many `partitions` entries (field 2) an encoded `ProduceManyRequest` holds, from its
/// field keys and lengths alone.
fn partition_entries(mut message: impl Buf) -> Result<usize, prost::DecodeError> {
    use prost::encoding::{DecodeContext, decode_key, skip_field};
    let mut entries = 0;
    while message.has_remaining() {
        let (tag, wire_type) = decode_key(&mut message)?;
        if tag == 2 {
            entries += 1;
        }
        skip_field(wire_type, tag, &mut message, DecodeContext::default())?;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;

    use super::*;

    #[test]
    fn partition_entries_are_counted_without_decoding() {
        let entry = |partition| strata_proto::PartitionBatches {
            topic: "t".into(),
            partition,
            batches: vec![Bytes::from_static(b"batch")],
        };
        let request = ProduceManyRequest { acks: -1, partitions: (0..300).map(entry).collect() };
        assert_eq!(partition_entries(&request.encode_to_vec()[..]).unwrap(), 300);
        assert!(partition_entries(&[0x12u8, 0x05, 0x00][..]).is_err(), "a length past the end");
    }
}
