use super::*;

#[test]
fn the_text_has_every_node_and_the_programs_own_summed() {
    let shm = Arc::new(Segment::create().unwrap());
    let board = shm.board();
    for slot in 0..2 {
        board.process(slot).set_state(SlotState::Serving);
        board.process(slot).pid.store(std::process::id(), Relaxed);
    }
    counter(&shm, 0, "orders_total").unwrap().add(3);
    counter(&shm, 1, "orders_total").unwrap().add(4);
    gauge(&shm, 1, "sessions").unwrap().add(-2);
    assert!(matches!(
        counter(&shm, 1, "sessions"),
        Err(MetricError::Kind(_))
    ));
    assert!(matches!(
        counter(&shm, 1, "bad-name"),
        Err(MetricError::Name(_))
    ));
    let text = render(&shm, 0..4);
    assert!(
        text.contains("multinode_node_ready{node=\"0\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("multinode_node_ready{node=\"1\"} 1\n"));
    assert!(
        !text.contains("node=\"2\""),
        "slots that never ran are left out"
    );
    assert!(
        text.contains("orders_total{node=\"1\"} 4\norders_total 7\n"),
        "{text}"
    );
    assert!(
        text.contains("sessions{node=\"1\"} -2\nsessions -2\n"),
        "{text}"
    );
    assert!(text.contains("multinode_node_resident_memory_bytes{node=\"0\"} "));
}
