//! The faulty network between one device and the servers: a TCP proxy that sends each connection
//! to a running instance and, request by request, delays it, drops it, cuts it inside its body,
//! or cuts its answer after part of it was forwarded.
//!
//! Requests are read whole before they go on, so a cut lands inside the body of exactly the
//! request chosen. The client never pipelines, so the bytes the server sends after a request was
//! forwarded are that request's answer: a cut planned for the answer applies to the next bytes
//! from the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::cluster::Cluster;
use crate::http::read_request;

/// How often each fault is injected, and how many were.
#[derive(Default)]
pub struct Faults {
    /// Off during the final quiet rounds.
    pub enabled: AtomicBool,
    /// The share of requests that meet a fault.
    pub rate: f64,
    /// Requests or answers held back for a while.
    pub delays: AtomicU64,
    /// Connections closed with a request read and not forwarded.
    pub drops: AtomicU64,
    /// Connections closed after part of a push's body was forwarded.
    pub cut_requests: AtomicU64,
    /// Connections closed after part of an answer was forwarded.
    pub cut_answers: AtomicU64,
    /// Of those, answers to pushes: the server may have applied them.
    pub cut_push_answers: AtomicU64,
}

enum RequestFault {
    Delay(Duration),
    Drop,
    CutBody,
    Answer(AnswerFault),
}

#[derive(Clone, Copy)]
enum AnswerFault {
    Delay(Duration),
    Cut { push: bool },
}

impl Faults {
    fn pick(&self, is_push: bool) -> Option<RequestFault> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let mut rng = rand::rng();
        if !rng.random_bool(self.rate.clamp(0.0, 1.0)) {
            return None;
        }
        let delay = Duration::from_millis(rng.random_range(20..600));
        Some(match rng.random_range(0..100) {
            0..20 => RequestFault::Delay(delay),
            20..35 => RequestFault::Answer(AnswerFault::Delay(delay)),
            35..55 => RequestFault::Drop,
            55..75 if is_push => RequestFault::CutBody,
            _ => RequestFault::Answer(AnswerFault::Cut { push: is_push }),
        })
    }
}

/// Starts a proxy on an ephemeral loopback port; it runs until the program ends.
pub async fn start(cluster: Arc<Cluster>, faults: Arc<Faults>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (cluster, faults) = (Arc::clone(&cluster), Arc::clone(&faults));
            tokio::spawn(async move {
                // A connection that fails ends as a network fault for the client, which is the
                // point: nothing to report.
                let _ = relay(client, &cluster, &faults).await;
            });
        }
    });
    Ok(addr)
}

async fn relay(client: TcpStream, cluster: &Cluster, faults: &Faults) -> std::io::Result<()> {
    // An instance that is down (killed, restarting) is not chosen; when none is up the client
    // sees its connection closed, as behind a load balancer with no healthy backend.
    let Some(port) = cluster.pick_up() else { return Ok(()) };
    let upstream = TcpStream::connect(("127.0.0.1", port)).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let planned = Mutex::new(None);
    // Whichever direction ends first ends the connection: dropping all four halves closes both
    // sockets, which is how a cut reaches the other side.
    tokio::select! {
        r = requests(client_read, upstream_write, faults, &planned) => r,
        r = answers(upstream_read, client_write, faults, &planned) => r,
    }
}

async fn requests(
    mut client: OwnedReadHalf,
    mut upstream: OwnedWriteHalf,
    faults: &Faults,
    planned: &Mutex<Option<AnswerFault>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut client, &mut buffer).await? {
        let body_len = request.bytes.len() - request.head_len;
        let is_push = request.method == "POST" && body_len >= 2;
        match faults.pick(is_push) {
            None => {}
            Some(RequestFault::Delay(d)) => {
                faults.delays.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(d).await;
            }
            Some(RequestFault::Drop) => {
                faults.drops.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Some(RequestFault::CutBody) => {
                let upto = request.head_len + rand::rng().random_range(1..body_len);
                upstream.write_all(&request.bytes[..upto]).await?;
                upstream.flush().await?;
                faults.cut_requests.fetch_add(1, Ordering::Relaxed);
                // Let the partial body reach the server before the connection goes.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Ok(());
            }
            Some(RequestFault::Answer(fault)) => {
                // Set before the request goes on, so it is there when the answer comes.
                *planned.lock().expect("fault plan") = Some(fault);
            }
        }
        upstream.write_all(&request.bytes).await?;
    }
    Ok(())
}

async fn answers(
    mut upstream: OwnedReadHalf,
    mut client: OwnedWriteHalf,
    faults: &Faults,
    planned: &Mutex<Option<AnswerFault>>,
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = upstream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        let fault = planned.lock().expect("fault plan").take();
        match fault {
            Some(AnswerFault::Delay(d)) => {
                faults.delays.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(d).await;
            }
            Some(AnswerFault::Cut { push }) if n >= 2 => {
                let upto = rand::rng().random_range(1..n);
                client.write_all(&chunk[..upto]).await?;
                client.flush().await?;
                faults.cut_answers.fetch_add(1, Ordering::Relaxed);
                if push {
                    faults.cut_push_answers.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            // A one-byte read cannot be cut in two: the cut waits for the next bytes.
            Some(cut @ AnswerFault::Cut { .. }) => *planned.lock().expect("fault plan") = Some(cut),
            None => {}
        }
        client.write_all(&chunk[..n]).await?;
    }
}
