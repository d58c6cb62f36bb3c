//! The event stream on one replica: catch-up then live entries in order,
//! access checked at fan-out time (members only, nothing after a removal,
//! a Welcome then later entries for a device added while connected),
//! ephemeral messages, a subscriber that never reads, and refusals before
//! the upgrade. Several replicas: `replicas.rs`.

use catbird_generated::lexicons::blue::catbird::mls::defs::MessageKind;
use catbird_generated::lexicons::blue::catbird::mls::subscribe_convo_events::{
    self, InfoName, MembershipChange, Message,
};
use catbird_generated::lexicons::blue::catbird::mls::{get_subscription_ticket, send_ephemeral};
use catbird_generated::runtime::xrpc::futures_util::StreamExt as _;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_mls_client::{ConvoEvents, Device, Event, LocalIdentity};
use sqlx::PgPool;

use crate::common::TestApp;
use crate::common::metrics;
use crate::common::process::PATIENCE;

/// A device of a new user, with KeyPackages published.
async fn device(app: &TestApp, user: &LocalIdentity, name: &str) -> Device {
    let mut device = Device::new(&user.did, name, app.client(user)).unwrap();
    device.publish_key_packages(2).await.unwrap();
    device
}

/// The next frame, within PATIENCE.
async fn next_frame(stream: &mut ConvoEvents) -> Message {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("a frame in time")
        .expect("the stream is open")
        .expect("a valid frame")
}

/// Frames until `marker` matches one (included), applied to `device`.
async fn frames_until(
    device: &mut Device,
    stream: &mut ConvoEvents,
    marker: impl Fn(&Message) -> bool,
) -> Vec<Message> {
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(stream).await;
        let done = marker(&frame);
        device.follow(frame.clone()).await.unwrap();
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Follows the stream until `count` application messages of `convo` were
/// received; returns them as (seq, text).
async fn receive(
    device: &mut Device,
    stream: &mut ConvoEvents,
    convo: &str,
    count: usize,
) -> Vec<(i64, String)> {
    let mut received = Vec::new();
    while received.len() < count {
        for event in device.follow(next_frame(stream).await).await.unwrap() {
            if let Event::Received { convo: c, messages } = event
                && c == convo
            {
                received.extend(messages.into_iter().map(|m| (m.seq, m.text)));
            }
        }
    }
    received
}

/// A conversation of `device` alone, whose messages mark how far fan-out
/// has come: when its entry arrives, everything before it was fanned out.
struct Marker {
    convo: String,
}

impl Marker {
    async fn new(device: &mut Device) -> Self {
        let convo = device.create_convo("marker").await.unwrap();
        Self { convo }
    }

    /// Sends a marker; returns a matcher for its frame.
    async fn send(&self, device: &mut Device) -> impl Fn(&Message) -> bool + use<> {
        let seq = device.send(&self.convo, "marker").await.unwrap();
        let convo = self.convo.clone();
        move |frame| matches!(frame, Message::LogEntry(e) if e.message.convo_id == convo && e.message.seq == seq)
    }
}

fn entries_of<'a>(
    frames: &'a [Message],
    convo: &'a str,
) -> impl Iterator<Item = (i64, MessageKind)> + 'a {
    frames.iter().filter_map(move |frame| match frame {
        Message::LogEntry(e) if e.message.convo_id == convo => {
            Some((e.message.seq, e.message.kind))
        }
        _ => None,
    })
}

#[sqlx::test(migrations = "./migrations")]
async fn a_stream_starts_with_the_heads_then_delivers_every_entry_in_order(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut alice_phone = device(&app, &alice, "phone").await;
    let mut bob_phone = device(&app, &bob, "phone").await;
    let convo = alice_phone.create_convo("stream").await.unwrap();
    alice_phone
        .add(&convo, std::slice::from_ref(&bob.did))
        .await
        .unwrap();
    bob_phone.join_from_welcome(&convo).await.unwrap();
    // Sent before bob connects: the catch-up must bring them.
    for i in 0..3 {
        alice_phone
            .send(&convo, &format!("early {i}"))
            .await
            .unwrap();
    }

    let mut stream = bob_phone.subscribe().await.unwrap();
    let Message::CatchUp(heads) = next_frame(&mut stream).await else {
        panic!("the first frame is #catchUp");
    };
    assert_eq!(heads.convos.len(), 1);
    assert_eq!(
        (heads.convos[0].convo_id.as_str(), heads.convos[0].last_seq),
        (convo.as_str(), 4)
    );
    let events = bob_phone.follow(Message::CatchUp(heads)).await.unwrap();
    let Some(Event::Received { messages, .. }) = events.first() else {
        panic!("the catch-up read the early messages: {events:?}");
    };
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [2, 3, 4]
    );

    for i in 0..20 {
        alice_phone
            .send(&convo, &format!("live {i}"))
            .await
            .unwrap();
    }
    let live = receive(&mut bob_phone, &mut stream, &convo, 20).await;
    let expected: Vec<(i64, String)> = (0..20).map(|i| (5 + i, format!("live {i}"))).collect();
    assert_eq!(live, expected, "every entry once, in seq order");
}

#[sqlx::test(migrations = "./migrations")]
async fn only_members_receive_and_a_removal_ends_delivery(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let users: Vec<LocalIdentity> = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|name| app.user(name))
        .collect();
    let mut devices = Vec::new();
    for user in &users {
        devices.push(device(&app, user, "phone").await);
    }
    let [alice, bob, carol, dave, erin] = &mut devices[..] else {
        unreachable!()
    };
    let convo = alice.create_convo("members").await.unwrap();
    let (bob_did, dave_did, erin_did) = (
        users[1].did.clone(),
        users[3].did.clone(),
        users[4].did.clone(),
    );
    alice
        .add(&convo, &[bob_did.clone(), erin_did.clone()])
        .await
        .unwrap();
    bob.join_from_welcome(&convo).await.unwrap();
    erin.join_from_welcome(&convo).await.unwrap();

    // Everyone connects; carol and dave are not members.
    let mut streams = Vec::new();
    let mut markers = Vec::new();
    for device in [&mut *bob, &mut *carol, &mut *dave, &mut *erin] {
        let mut stream = device.subscribe().await.unwrap();
        let first = next_frame(&mut stream).await;
        device.follow(first).await.unwrap();
        markers.push(Marker::new(device).await);
        streams.push(stream);
    }
    let [bob_stream, carol_stream, dave_stream, erin_stream] = &mut streams[..] else {
        unreachable!()
    };

    // Dave is added while connected; bob is removed, erin removed and banned.
    let before = alice.send(&convo, "before").await.unwrap();
    alice
        .add(&convo, std::slice::from_ref(&dave_did))
        .await
        .unwrap();
    let add_seq = before + 1;
    alice.remove(&convo, &bob_did, false).await.unwrap();
    let remove_seq = add_seq + 1;
    alice.remove(&convo, &erin_did, true).await.unwrap();
    let ban_seq = remove_seq + 1;
    let after = alice.send(&convo, "after").await.unwrap();

    // Bob: everything up to the commit that removed him, and nothing later.
    let marker = markers[0].send(bob).await;
    let frames = frames_until(bob, bob_stream, marker).await;
    let seqs: Vec<i64> = entries_of(&frames, &convo).map(|(seq, _)| seq).collect();
    assert_eq!(
        seqs,
        [before, add_seq, remove_seq],
        "bob: up to his removal only"
    );
    assert!(frames.iter().any(|f| matches!(f, Message::Membership(m)
        if m.seq == remove_seq && m.did == bob_did && m.change == MembershipChange::Removed)));

    // Erin: up to the ban, told it was a ban.
    let marker = markers[3].send(erin).await;
    let frames = frames_until(erin, erin_stream, marker).await;
    let seqs: Vec<i64> = entries_of(&frames, &convo).map(|(seq, _)| seq).collect();
    assert_eq!(
        seqs,
        [before, add_seq, remove_seq, ban_seq],
        "erin: up to her ban only"
    );
    assert!(frames.iter().any(|f| matches!(f, Message::Membership(m)
        if m.seq == ban_seq && m.did == erin_did && m.change == MembershipChange::Banned)));

    // Carol: nothing of the conversation at all.
    let marker = markers[1].send(carol).await;
    let frames = frames_until(carol, carol_stream, marker).await;
    assert_eq!(
        entries_of(&frames, &convo).count(),
        0,
        "carol is not a member"
    );
    assert!(!frames.iter().any(|f| matches!(f,
        Message::Welcome(w) if w.convo_id == convo)));

    // Dave: his Welcome, then only what came after the commit adding him;
    // following the stream joined him and decrypted "after".
    let marker = markers[2].send(dave).await;
    let frames = frames_until(dave, dave_stream, marker).await;
    let welcome = frames
        .iter()
        .position(
            |f| matches!(f, Message::Welcome(w) if w.convo_id == convo && w.commit_seq == add_seq),
        )
        .expect("dave gets his Welcome");
    let seqs: Vec<i64> = entries_of(&frames, &convo).map(|(seq, _)| seq).collect();
    assert_eq!(
        seqs,
        [remove_seq, ban_seq, after],
        "dave: after his add only"
    );
    let first_entry = frames
        .iter()
        .position(|f| matches!(f, Message::LogEntry(e) if e.message.convo_id == convo))
        .unwrap();
    assert!(welcome < first_entry, "the Welcome comes first");
    assert_eq!(dave.last_seq(&convo), after);
    assert_eq!(dave.epoch(&convo).unwrap(), alice.epoch(&convo).unwrap());
}

#[sqlx::test(migrations = "./migrations")]
async fn ephemeral_messages_reach_connected_members_and_are_never_stored(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        config.ephemeral_max_bytes = 600;
        config.rate_limit_ephemeral = 3;
    })
    .await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut alice_phone = device(&app, &alice, "phone").await;
    let mut bob_phone = device(&app, &bob, "phone").await;
    let convo = alice_phone.create_convo("typing").await.unwrap();
    alice_phone
        .add(&convo, std::slice::from_ref(&bob.did))
        .await
        .unwrap();
    bob_phone.join_from_welcome(&convo).await.unwrap();
    let mut stream = bob_phone.subscribe().await.unwrap();
    let first = next_frame(&mut stream).await;
    bob_phone.follow(first).await.unwrap();
    let entries_before: i64 = count(&app.pool, "SELECT count(*) FROM convo_messages").await;

    alice_phone
        .send_ephemeral(&convo, "alice is typing")
        .await
        .unwrap();
    let events = loop {
        let events = bob_phone
            .follow(next_frame(&mut stream).await)
            .await
            .unwrap();
        if !events.is_empty() {
            break events;
        }
    };
    assert_eq!(
        events,
        [Event::Ephemeral {
            convo: convo.clone(),
            sender: format!("{}#phone", alice.did),
            text: "alice is typing".into()
        }]
    );
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM convo_messages").await,
        entries_before
    );
    assert_eq!(
        bob_phone.last_seq(&convo),
        1,
        "an ephemeral message has no seq"
    );

    // Over the size limit, then over the rate (2 more pass, the 4th fails).
    let error = alice_phone
        .send_ephemeral(&convo, &"x".repeat(700))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("MessageTooLarge"), "{error}");
    alice_phone.send_ephemeral(&convo, "1").await.unwrap();
    alice_phone.send_ephemeral(&convo, "2").await.unwrap();
    let error = alice_phone.send_ephemeral(&convo, "3").await.unwrap_err();
    let catbird_mls_client::DeviceError::SendEphemeral(error) = error else {
        panic!("{error}");
    };
    assert_eq!(
        error.declared(),
        Some(&send_ephemeral::Error::RateLimitExceeded)
    );
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM convo_messages").await,
        entries_before
    );
}

async fn count(pool: &PgPool, query: &str) -> i64 {
    sqlx::query_scalar(query).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = "./migrations")]
async fn a_subscriber_that_never_reads_is_dropped_and_others_keep_receiving(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn_with(pool, |config| config.stream_queue_frames = 8).await;
    let (alice, bob, carol) = (app.user("alice"), app.user("bob"), app.user("carol"));
    let mut alice_phone = device(&app, &alice, "phone").await;
    let mut bob_phone = device(&app, &bob, "phone").await;
    let mut carol_phone = device(&app, &carol, "phone").await;
    let convo = alice_phone.create_convo("flood").await.unwrap();
    alice_phone
        .add(&convo, &[bob.did.clone(), carol.did.clone()])
        .await
        .unwrap();
    bob_phone.join_from_welcome(&convo).await.unwrap();
    carol_phone.join_from_welcome(&convo).await.unwrap();

    // Carol connects with a tiny receive buffer and never reads.
    let stalled = stalled_subscriber(&app, &carol, "phone").await;
    let mut bob_stream = bob_phone.subscribe().await.unwrap();
    let first = next_frame(&mut bob_stream).await;
    bob_phone.follow(first).await.unwrap();
    let before = metrics::scrape(&app).await;

    // Large messages fill carol's socket, then her queue of 8 frames,
    // while bob reads along.
    let text = "y".repeat(128 * 1024);
    let count = 100;
    let send_all = async {
        for _ in 0..count {
            alice_phone.send(&convo, &text).await.unwrap();
        }
    };
    let ((), received) = tokio::join!(
        send_all,
        receive(&mut bob_phone, &mut bob_stream, &convo, count)
    );
    assert_eq!(received.len(), count, "bob keeps receiving");

    let after = metrics::scrape(&app).await;
    assert_eq!(
        after.count("realtime_slow_consumer_disconnects_total", &[])
            - before.count("realtime_slow_consumer_disconnects_total", &[]),
        1.0,
        "carol's queue hit its cap once, and she was dropped"
    );
    // Her stream is gone: only bob's is registered. Reading now, carol gets
    // what her socket held (and the notice, if it got out before the send
    // timeout), then the close; never the flood.
    assert_eq!(
        app.state.realtime.hub.streams(),
        1,
        "carol's stream was dropped"
    );
    let frames = stalled.drain().await;
    assert!(
        frames.len() < count,
        "carol got what her socket and queue held, not the flood"
    );
    if let Some(Message::Info(info)) = frames.last() {
        assert_eq!(info.name, InfoName::SlowConsumer);
    }
}

/// A subscriber on a socket with a tiny receive buffer that reads nothing
/// until [`Stalled::drain`].
struct Stalled {
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

async fn stalled_subscriber(app: &TestApp, user: &LocalIdentity, device: &str) -> Stalled {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(app.address).await.unwrap();
    let url = format!(
        "ws://{}/xrpc/{}?deviceId={}",
        app.address,
        subscribe_convo_events::NSID,
        urlencode(&format!("{}#{device}", user.did))
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    let token = app.token(user, subscribe_convo_events::NSID);
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    Stalled { socket }
}

impl Stalled {
    /// Reads every frame until the server closes the stream.
    async fn drain(mut self) -> Vec<Message> {
        use catbird_generated::runtime::xrpc::EventMessage as _;
        let mut frames = Vec::new();
        while let Ok(Some(Ok(message))) = tokio::time::timeout(PATIENCE, self.socket.next()).await {
            let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message else {
                continue;
            };
            let (header, body) = catbird_generated::runtime::xrpc::split_frame(&bytes).unwrap();
            if let Some(t) = header.t {
                frames.push(Message::decode(&t, body).unwrap());
            }
        }
        frames
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[sqlx::test(migrations = "./migrations")]
async fn refused_upgrades_get_xrpc_errors(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.max_streams_per_user = 1).await;
    let alice = app.user("alice");
    let device_id = format!("{}#phone", alice.did);
    let url = |query: &str| {
        format!(
            "{}?deviceId={}{query}",
            app.url(&format!("/xrpc/{}", subscribe_convo_events::NSID)),
            urlencode(&device_id)
        )
    };
    let upgrade = |request: catbird_generated::runtime::xrpc::reqwest::RequestBuilder| {
        request
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let http = app.http();
    let status_of =
        |response: catbird_generated::runtime::xrpc::reqwest::Response| response.status();

    // No token; a token for another method.
    let response = upgrade(http.get(url(""))).send().await.unwrap();
    assert_eq!(status_of(response), StatusCode::UNAUTHORIZED);
    let token = app.token(&alice, get_subscription_ticket::NSID);
    let response = upgrade(http.get(url("")).bearer_auth(token))
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(response), StatusCode::UNAUTHORIZED);

    // A ticket works once; a reused one and an expired one do not.
    let client = app.client(&alice);
    let input = get_subscription_ticket::Input {
        extra: Default::default(),
        device_id: device_id.clone(),
    };
    let ticket = client.get_subscription_ticket(&input).await.unwrap().ticket;
    let with_ticket = |ticket: &str| url(&format!("&ticket={}", urlencode(ticket)));
    let (socket, _) =
        tokio_tungstenite::connect_async(with_ticket(&ticket).replace("http://", "ws://"))
            .await
            .expect("a valid ticket upgrades");
    drop(socket);
    let response = upgrade(http.get(with_ticket(&ticket)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_of(response),
        StatusCode::UNAUTHORIZED,
        "a used ticket"
    );
    let expired = client.get_subscription_ticket(&input).await.unwrap().ticket;
    sqlx::query("UPDATE stream_tickets SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let response = upgrade(http.get(with_ticket(&expired)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_of(response),
        StatusCode::UNAUTHORIZED,
        "an expired ticket"
    );

    // Another user's device; then the per-user cap.
    let bob = app.user("bob");
    let params = subscribe_convo_events::Params {
        device_id: device_id.clone(),
        ticket: None,
    };
    let error = app
        .client(&bob)
        .subscribe_convo_events(&params)
        .await
        .unwrap_err();
    assert_eq!(
        error.declared(),
        Some(&subscribe_convo_events::Error::InvalidDevice)
    );
    let first = client
        .subscribe_convo_events(&params)
        .await
        .expect("one stream");
    let error = client.subscribe_convo_events(&params).await.unwrap_err();
    assert_eq!(
        error.declared(),
        Some(&subscribe_convo_events::Error::TooManyConnections)
    );
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    drop(first);
}
