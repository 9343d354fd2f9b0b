//! Ordering, dedupe and every recovery error path of [`Sequencer`].

use super::*;

fn out(seq: u64, text: &str) -> ProcessEvent {
    ProcessEvent::Output {
        seq,
        stream: Stream::Stdout,
        data: text.as_bytes().to_vec(),
    }
}

fn exited(seq: u64, exit_code: i32) -> ProcessEvent {
    ProcessEvent::Exited {
        seq,
        exit_code,
        sandbox_denied: false,
    }
}

fn seqs(events: &[ProcessEvent]) -> Vec<u64> {
    events.iter().map(ProcessEvent::seq).collect()
}

/// A sequencer that has published seqs 1..=n as output.
fn published_through(n: u64) -> Sequencer {
    let mut s = Sequencer::default();
    for seq in 1..=n {
        assert_eq!(s.push(out(seq, "x")).unwrap().len(), 1);
    }
    s
}

fn catch_up(chunks: Vec<ProcessEvent>, next_seq: u64) -> CatchUp {
    CatchUp {
        chunks,
        end_seq: next_seq - 1,
        complete: true,
        ..CatchUp::default()
    }
}

#[test]
fn notifications_delivered_4_1_3_2_come_out_1_2_3_4() {
    let mut s = Sequencer::default();
    let mut published = Vec::new();
    for seq in [4, 1, 3, 2] {
        published.extend(s.push(out(seq, &seq.to_string())).unwrap());
    }
    assert_eq!(seqs(&published), vec![1, 2, 3, 4]);
    assert_eq!(s.last_published(), 4);
}

#[test]
fn nothing_is_published_while_the_first_seq_is_missing() {
    let mut s = Sequencer::default();
    assert!(s.push(out(2, "b")).unwrap().is_empty());
    assert!(s.push(exited(3, 0)).unwrap().is_empty());
    assert_eq!(seqs(&s.push(out(1, "a")).unwrap()), vec![1, 2, 3]);
}

#[test]
fn duplicate_notifications_are_published_once() {
    let mut s = Sequencer::default();
    assert_eq!(s.push(out(1, "a")).unwrap().len(), 1);
    assert!(s.push(out(1, "a")).unwrap().is_empty(), "already published");
    assert!(s.push(out(3, "c")).unwrap().is_empty());
    assert!(s.push(out(3, "c")).unwrap().is_empty(), "already pending");
    assert_eq!(seqs(&s.push(out(2, "b")).unwrap()), vec![2, 3]);
}

#[test]
fn close_is_last_and_ends_the_sequence() {
    let mut s = Sequencer::default();
    s.push(out(1, "a")).unwrap();
    s.push(ProcessEvent::Closed { seq: 3 }).unwrap();
    assert_eq!(seqs(&s.push(exited(2, 0)).unwrap()), vec![2, 3]);
    assert!(s.finished());
    assert!(s.push(out(4, "late")).unwrap().is_empty());
}

#[test]
fn output_after_a_pending_close_conflicts() {
    let mut s = Sequencer::default();
    s.push(ProcessEvent::Closed { seq: 3 }).unwrap();
    assert_eq!(
        s.push(out(4, "d")),
        Err(SequenceError::CloseConflictsWithOutput { seq: 3 })
    );
}

#[test]
fn one_seq_as_two_kinds_conflicts() {
    let mut s = Sequencer::default();
    s.push(out(2, "b")).unwrap();
    assert_eq!(
        s.push(exited(2, 0)),
        Err(SequenceError::Conflict {
            seq: 2,
            first: "output",
            second: "exit"
        })
    );
}

#[test]
fn catch_up_publishes_only_what_is_new() {
    let mut s = published_through(2);
    // Seq 5 arrived live on the new connection before the read's answer.
    assert!(s.push(out(5, "e")).unwrap().is_empty());
    let published = s
        .recover(catch_up(
            vec![
                out(1, "a"),
                out(2, "b"),
                out(3, "c"),
                out(4, "d"),
                out(5, "e"),
            ],
            6,
        ))
        .unwrap();
    assert_eq!(seqs(&published), vec![3, 4, 5]);
    assert_eq!(s.last_published(), 5);
}

#[test]
fn catch_up_puts_the_exit_in_the_one_seq_no_chunk_has() {
    let mut s = published_through(1);
    let published = s
        .recover(CatchUp {
            exited: true,
            exit_code: Some(4),
            closed: true,
            ..catch_up(vec![out(3, "late")], 5)
        })
        .unwrap();
    assert_eq!(
        published,
        vec![
            exited(2, 4),
            out(3, "late"),
            ProcessEvent::Closed { seq: 4 }
        ]
    );
    assert!(s.finished());
}

#[test]
fn catch_up_of_a_process_with_nothing_new_publishes_nothing() {
    let mut s = published_through(3);
    assert!(s.recover(catch_up(vec![], 4)).unwrap().is_empty());
    assert!(s.recover(catch_up(vec![], 2)).unwrap().is_empty());
}

#[test]
fn catch_up_gap_fails_the_process_and_publishes_nothing() {
    let mut s = published_through(2);
    // Seqs 3 and 4 were dropped by retention: the first retained chunk is 5.
    let err = s
        .recover(catch_up(vec![out(5, "e"), out(6, "f")], 7))
        .unwrap_err();
    assert_eq!(
        err,
        SequenceError::Gap {
            first_missing: 3,
            missing: 2,
            first_retained: 5
        }
    );
    assert!(err.to_string().contains("no longer retained"), "{err}");
    assert_eq!(s.last_published(), 2, "an error publishes nothing");
}

#[test]
fn catch_up_gap_is_not_hidden_by_an_exit() {
    let mut s = published_through(1);
    // Seq 2 lost, 3 output, 4 exit, 5 close: two seqs unaccounted for, only one can be the exit.
    let err = s
        .recover(CatchUp {
            exited: true,
            exit_code: Some(0),
            closed: true,
            ..catch_up(vec![out(3, "c")], 6)
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            SequenceError::Gap {
                first_missing: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn catch_up_exit_without_code_fails() {
    let mut s = published_through(1);
    let err = s
        .recover(CatchUp {
            exited: true,
            exit_code: None,
            ..catch_up(vec![], 3)
        })
        .unwrap_err();
    assert_eq!(err, SequenceError::ExitWithoutCode { seq: 2 });
}

#[test]
fn catch_up_exit_with_no_seq_left_fails() {
    let mut s = published_through(1);
    let err = s
        .recover(CatchUp {
            exited: true,
            exit_code: Some(0),
            ..catch_up(vec![out(2, "b")], 3)
        })
        .unwrap_err();
    assert_eq!(err, SequenceError::ExitWithoutSeq { end_seq: 2 });
}

#[test]
fn catch_up_close_conflicting_with_output_fails() {
    let mut s = published_through(1);
    // The close must be the last seq (nextSeq - 1), but a chunk claims it.
    let err = s
        .recover(CatchUp {
            exited: true,
            exit_code: Some(0),
            closed: true,
            ..catch_up(vec![out(2, "b"), out(4, "d")], 5)
        })
        .unwrap_err();
    assert_eq!(err, SequenceError::CloseConflictsWithOutput { seq: 4 });
}

#[test]
fn catch_up_close_conflicting_with_a_pending_notification_fails() {
    let mut s = published_through(1);
    s.push(out(3, "c")).unwrap();
    let err = s
        .recover(CatchUp {
            closed: true,
            ..catch_up(vec![], 4)
        })
        .unwrap_err();
    assert_eq!(err, SequenceError::CloseConflictsWithOutput { seq: 3 });
}

#[test]
fn catch_up_reports_the_servers_failure() {
    let mut s = published_through(1);
    let err = s
        .recover(CatchUp {
            failure: Some("failed to wait for process".into()),
            ..catch_up(vec![], 2)
        })
        .unwrap_err();
    assert!(matches!(err, SequenceError::ProcessFailed { .. }));
}

#[test]
fn incomplete_catch_up_leaves_a_later_exit_to_notifications() {
    let mut s = published_through(1);
    // The reads stopped at seq 3 because live notifications (from seq 4) took over; the exit the
    // read reports lies beyond and arrives as a notification.
    s.push(exited(4, 0)).unwrap();
    let published = s
        .recover(CatchUp {
            chunks: vec![out(2, "b"), out(3, "c")],
            end_seq: 3,
            complete: false,
            exited: true,
            exit_code: Some(0),
            ..CatchUp::default()
        })
        .unwrap();
    assert_eq!(seqs(&published), vec![2, 3, 4]);
}

#[test]
fn take_contiguous_publishes_up_to_the_first_hole_and_keeps_the_rest() {
    let mut s = published_through(2);
    let mut chunks: VecDeque<ProcessEvent> =
        [out(2, "b"), out(3, "c"), out(4, "d"), out(6, "f")].into();
    let published = s.take_contiguous(&mut chunks).unwrap();
    assert_eq!(seqs(&published), vec![3, 4]);
    assert_eq!(seqs(&Vec::from(chunks)), vec![6]);
    assert_eq!(s.last_published(), 4);
}

// ----- readGaps: the server's explicit `gap` and `exitedSeq`.

#[test]
fn catch_up_puts_the_exit_at_the_servers_exited_seq() {
    let mut s = published_through(1);
    // Seq 2 is the exit, 3 output after it, 4 close; nothing dropped.
    let published = s
        .recover(CatchUp {
            exited: true,
            exit_code: Some(7),
            closed: true,
            exited_seq: Some(2),
            ..catch_up(vec![out(3, "late")], 5)
        })
        .unwrap();
    assert_eq!(seqs(&published), vec![2, 3, 4]);
    assert_eq!(published[0], exited(2, 7));
    assert!(s.finished());
}

#[test]
fn catch_up_with_an_explicit_gap_fails_with_exactly_its_seqs() {
    let mut s = published_through(1);
    // Server: seqs 2..=4 dropped (3 is the exit), 5 output, 6 close.
    let err = s
        .recover(CatchUp {
            exited: true,
            exit_code: Some(0),
            closed: true,
            exited_seq: Some(3),
            gap: Some((2, 4)),
            ..catch_up(vec![out(5, "e")], 7)
        })
        .unwrap_err();
    assert_eq!(
        err,
        SequenceError::Gap {
            first_missing: 2,
            missing: 2,
            first_retained: 3,
        }
    );
    assert_eq!(s.last_published(), 1, "an error publishes nothing");
}

#[test]
fn an_explicit_gap_covered_by_live_notifications_is_no_loss() {
    let mut s = published_through(1);
    // Seq 2 arrived live before it was dropped from retention.
    assert!(s.push(out(3, "c")).unwrap().is_empty());
    assert_eq!(seqs(&s.push(out(2, "b")).unwrap()), vec![2, 3]);
    let mut s2 = published_through(1);
    assert!(s2.push(out(2, "b")).unwrap().len() == 1);
    let published = s2
        .recover(CatchUp {
            gap: Some((1, 2)),
            ..catch_up(vec![out(3, "c")], 4)
        })
        .unwrap();
    assert_eq!(seqs(&published), vec![3]);
}
