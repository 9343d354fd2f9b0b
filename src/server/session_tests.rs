//! The session registry's attach, detach and expiry, with tokio's clock paused: the orders of
//! events that a real socket cannot line up on demand (a detach by a connection that no longer
//! holds the session, an expiry timer of an earlier detach firing after a resume).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ResumeError, SessionRegistry};
use crate::server::config::ServerConfig;
use crate::server::heap_trim::HeapTrim;

const TTL: Duration = Duration::from_millis(100);

fn registry() -> Arc<SessionRegistry> {
    let config = ServerConfig {
        detached_session_ttl: TTL,
        ..ServerConfig::default()
    };
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let trim = HeapTrim::new(tracker.clone(), cancel.clone());
    SessionRegistry::new(config, tracker, cancel, None, trim)
}

fn outgoing() -> mpsc::Sender<crate::rpc::Outgoing> {
    mpsc::channel(1).0
}

/// Lets the clock run `by` and every timer due by then fire.
async fn elapse(by: Duration) {
    tokio::time::sleep(by).await;
    // The expiry task woke; let it run.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn detach_by_a_connection_that_no_longer_holds_the_session_is_ignored() {
    let sessions = registry();
    let session = sessions.create(1, outgoing()).unwrap();
    sessions.detach(&session, 1);
    let resumed = sessions.resume(&session.id, 2, outgoing()).unwrap();
    assert!(Arc::ptr_eq(&resumed, &session));

    // Connection 1 ends again (or late): the session stays with connection 2.
    sessions.detach(&session, 1);
    assert_eq!(session.attachment.attached_connection(), Some(2));
    assert!(matches!(
        sessions.resume(&session.id, 3, outgoing()),
        Err(ResumeError::Attached(_))
    ));
    // And no expiry timer was armed by it.
    elapse(TTL * 3).await;
    assert_eq!(session.attachment.attached_connection(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn expiry_timer_of_an_earlier_detach_leaves_a_session_detached_again_since() {
    let sessions = registry();
    let session = sessions.create(1, outgoing()).unwrap();
    sessions.detach(&session, 1); // timer 1: due at TTL
    elapse(TTL / 2).await;
    sessions.resume(&session.id, 2, outgoing()).unwrap();
    sessions.detach(&session, 2); // timer 2: due at 1.5 TTL

    // Timer 1 fires: the session, detached since 0.5 TTL, must stay resumable.
    elapse(TTL * 3 / 4).await;
    sessions
        .resume(&session.id, 3, outgoing())
        .expect("timer 1 must not expire a session detached again since");
    sessions.detach(&session, 3); // timer 3: due at 2.25 TTL

    // Timer 2 fires (1.5 TTL) and must not end it either; timer 3 then does.
    elapse(TTL / 2).await;
    sessions
        .resume(&session.id, 4, outgoing())
        .expect("timer 2 must not expire a session detached again since");
    sessions.detach(&session, 4); // timer 4: due at 2.75 TTL
    elapse(TTL * 2).await;
    assert!(matches!(
        sessions.resume(&session.id, 5, outgoing()),
        Err(ResumeError::Unknown(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn resume_just_before_the_ttl_wins_and_just_after_is_unknown() {
    let sessions = registry();
    let early = sessions.create(1, outgoing()).unwrap();
    let late = sessions.create(2, outgoing()).unwrap();
    sessions.detach(&early, 1);
    sessions.detach(&late, 2);
    elapse(TTL - Duration::from_millis(1)).await;
    sessions.resume(&early.id, 3, outgoing()).unwrap();
    elapse(Duration::from_millis(2)).await;
    assert!(matches!(
        sessions.resume(&late.id, 4, outgoing()),
        Err(ResumeError::Unknown(_))
    ));
    // The early one, attached when its timer fired, lives on.
    assert_eq!(early.attachment.attached_connection(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn session_limit_counts_detached_sessions_never_refuses_a_resume_and_frees_on_expiry() {
    let sessions = SessionRegistry::new(
        ServerConfig {
            detached_session_ttl: TTL,
            max_sessions: 2,
            ..ServerConfig::default()
        },
        TaskTracker::new(),
        CancellationToken::new(),
        None,
        HeapTrim::new(TaskTracker::new(), CancellationToken::new()),
    );
    let a = sessions.create(1, outgoing()).unwrap();
    let _b = sessions.create(2, outgoing()).unwrap();
    let Err(refused) = sessions.create(3, outgoing()) else {
        panic!("a third session must be refused");
    };
    assert_eq!(refused.0, 2);
    assert!(refused.to_string().contains("--max-sessions"), "{refused}");
    // Detached, it still counts; its resume is never refused by the limit.
    sessions.detach(&a, 1);
    assert!(sessions.create(3, outgoing()).is_err());
    sessions.resume(&a.id, 4, outgoing()).unwrap();
    // Expired, its place is free again.
    sessions.detach(&a, 4);
    elapse(TTL * 2).await;
    sessions.create(5, outgoing()).unwrap();
    assert!(sessions.create(6, outgoing()).is_err());
}
