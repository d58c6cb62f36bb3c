//! Connections that hold the service without using it: idle ones (also
//! after a response, on keep-alive), slowloris clients sending a header
//! byte now and then, and requests whose body stalls. With small
//! configured timeouts, each is closed within its bound while a normal
//! client keeps being served; an event stream outlives them all; and one
//! address cannot hold more than its share of connections.

use std::time::{Duration, Instant};

use catbird_generated::lexicons::blue::catbird::mls::subscribe_convo_events::Message;
use catbird_generated::lexicons::blue::catbird::mls::{get_convos, send_message};
use catbird_generated::runtime::xrpc::futures_util::StreamExt as _;
use catbird_generated::runtime::xrpc::futures_util::future::join_all;
use catbird_mls_client::Device;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::TestApp;

const IDLE: Duration = Duration::from_millis(400);
const HEADERS: Duration = Duration::from_millis(400);
const BODY: Duration = Duration::from_millis(400);
/// Room for a debug build on a busy CI machine on top of each bound.
const SLACK: Duration = Duration::from_secs(3);
/// Attackers of each kind.
const EACH: usize = 20;

async fn spawn(pool: PgPool) -> TestApp {
    TestApp::spawn_with(pool, |config| {
        config.idle_timeout_ms = IDLE.as_millis() as u64;
        config.header_read_timeout_ms = HEADERS.as_millis() as u64;
        config.body_read_timeout_ms = BODY.as_millis() as u64;
    })
    .await
}

/// Reads until the server closes the connection (or resets it); what it
/// sent, and when it closed.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return (received, Instant::now()),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("a connection was held for a minute"),
        }
    }
}

/// Connects and sends nothing: closed after the idle timeout.
async fn idle(app: &TestApp) -> Duration {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let connected = Instant::now();
    let (received, closed) = until_closed(&mut stream).await;
    assert!(received.is_empty());
    closed - connected
}

/// One request on keep-alive, then nothing: closed the idle timeout after
/// the response.
async fn idle_after_a_response(app: &TestApp) -> Duration {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(b"GET /xrpc/_health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    let answered = Instant::now();
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buffer[..n])
    );
    let (_, closed) = until_closed(&mut stream).await;
    closed - answered
}

/// Sends a request's headers one byte every 50 ms, never finishing:
/// closed the header timeout after the first byte.
async fn slowloris(app: &TestApp) -> Duration {
    let stream = TcpStream::connect(app.address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = b"GET /xrpc/_health HTTP/1.1\r\nhost: x\r\nx-slow: ";
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut sent = 0;
    let mut buffer = [0u8; 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buffer) => {
                assert!(matches!(read, Ok(0) | Err(_)), "a slowloris request was answered");
                return started.elapsed();
            }
            _ = tick.tick() => {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                if writer.write_all(&[byte]).await.is_err() {
                    return started.elapsed();
                }
                sent += 1;
                assert!(started.elapsed() < Duration::from_secs(60), "a slowloris client was held a minute");
            }
        }
    }
}

/// Sends 10 of a body's 1,000 bytes and stalls: answered 408 and closed
/// the body timeout later.
async fn stalled_body(app: &TestApp, token: String) -> Duration {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /xrpc/{} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"convoId\"",
        send_message::NSID
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let stalled = Instant::now();
    let (received, closed) = until_closed(&mut stream).await;
    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"RequestTimeout\""), "{response}");
    closed - stalled
}

fn assert_within(what: &str, took: &[Duration], bound: Duration) {
    let slowest = took.iter().max().unwrap();
    let fastest = took.iter().min().unwrap();
    println!(
        "{what}: {} closed after {fastest:?} to {slowest:?} (bound {bound:?})",
        took.len()
    );
    assert!(
        *slowest <= bound + SLACK,
        "{what} held too long: {slowest:?}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn idle_slowloris_and_stalled_connections_are_closed_while_a_client_is_served(pool: PgPool) {
    let app = spawn(pool).await;
    let attacker = app.user("mallory");
    let alice = app.user("alice");
    let client = app.client(&alice);

    let attacks = async {
        let tokens: Vec<String> = (0..EACH)
            .map(|_| app.token(&attacker, send_message::NSID))
            .collect();
        tokio::join!(
            join_all((0..EACH).map(|_| idle(&app))),
            join_all((0..EACH).map(|_| idle_after_a_response(&app))),
            join_all((0..EACH).map(|_| slowloris(&app))),
            join_all(tokens.into_iter().map(|token| stalled_body(&app, token))),
        )
    };
    let (results, served) = {
        let done = std::sync::atomic::AtomicBool::new(false);
        let normal = async {
            let mut latencies = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                client
                    .get_convos(&get_convos::Params {
                        limit: 50,
                        cursor: None,
                    })
                    .await
                    .expect("the normal client is served");
                latencies.push(started.elapsed());
            }
            latencies
        };
        let attacks = async {
            let results = attacks.await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            results
        };
        tokio::join!(attacks, normal)
    };
    let (idle, keep_alive, slowloris, stalled) = results;
    assert_within("idle connections", &idle, IDLE);
    assert_within("idle keep-alive connections", &keep_alive, IDLE);
    assert_within("slowloris connections", &slowloris, HEADERS);
    assert_within("stalled bodies (408)", &stalled, BODY);
    let mut sorted = served.clone();
    sorted.sort();
    println!(
        "normal client meanwhile: {} getConvos, all 200; latency median {:?}, max {:?}",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn an_event_stream_outlives_the_idle_timeout(pool: PgPool) {
    let app = spawn(pool).await;
    let alice = app.user("alice");
    let mut device = Device::new(&alice.did, "phone", app.client(&alice)).unwrap();
    device.publish_key_packages(1).await.unwrap();
    let convo = device.create_convo("stream").await.unwrap();
    let mut events = device.subscribe().await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert!(matches!(first, Message::CatchUp(_)), "{first:?}");
    // Well past the idle and header timeouts, with nothing on the stream.
    tokio::time::sleep(4 * IDLE.max(HEADERS)).await;
    device.send(&convo, "still there?").await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("a frame")
        .unwrap()
        .unwrap();
    assert!(matches!(next, Message::LogEntry(_)), "{next:?}");
}

#[sqlx::test(migrations = "./migrations")]
async fn one_address_holds_at_most_its_share_of_connections(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.max_connections_per_address = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.address).await.unwrap());
    }
    // The fourth is closed at once (the idle timeout is a minute).
    let mut fourth = TcpStream::connect(app.address).await.unwrap();
    let (received, _) = until_closed(&mut fourth).await;
    assert!(received.is_empty());
    // One given back: the next is served.
    drop(held.pop());
    let health = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut stream = TcpStream::connect(app.address).await.unwrap();
            stream
                .write_all(b"GET /xrpc/_health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let (received, _) = until_closed(&mut stream).await;
            // The freed slot is given back when the server notices the close.
            if !received.is_empty() {
                return received;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("served once a connection closed");
    assert!(health.starts_with(b"HTTP/1.1 200"));
}
