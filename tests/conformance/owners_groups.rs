//! Groups (derived stage and progress, cascade) and owners (isolation, budgets, tokens).

use jobq::{ClaimFilter, Error, JobError, JobFilter, NewJob, Status};
use serde_json::json;

use crate::common::Env;

#[test]
fn a_groups_stage_and_progress_follow_its_jobs() {
    let env = Env::new();
    let campaign = env
        .queue
        .create_group("spring campaign", Some(json!({"brand": "acme"})))
        .unwrap();
    assert_eq!(
        (campaign.stage, campaign.progress, campaign.total),
        ("empty", 0.0, 0)
    );
    assert_eq!(campaign.metadata, json!({"brand": "acme"}));
    let kinds = ["scene_video", "scene_video", "voice_over", "music"];
    for kind in kinds {
        env.queue
            .enqueue(NewJob::new(kind).group(&campaign.id))
            .unwrap();
    }
    let g = env.queue.get_group(&campaign.id).unwrap();
    assert_eq!(
        (g.stage, g.progress, g.total, g.counts[&Status::Queued]),
        ("not_started", 0.0, 4, 4)
    );

    let claimed = env.queue.claim("w", 2, &ClaimFilter::default()).unwrap();
    env.queue
        .set_progress(&claimed[0].lease(), 0.5, None)
        .unwrap();
    env.queue.complete(&claimed[1].lease(), json!(1)).unwrap();
    let g = env.queue.get_group(&campaign.id).unwrap();
    // (0.5 + 1 + 0 + 0) / 4 = 37.5 %
    assert_eq!((g.stage, g.progress), ("in_progress", 37.5));
    assert_eq!(
        (g.counts[&Status::Running], g.counts[&Status::Succeeded]),
        (1, 1)
    );

    env.queue.complete(&claimed[0].lease(), json!(1)).unwrap();
    for job in env.queue.claim("w", 2, &ClaimFilter::default()).unwrap() {
        env.queue.complete(&job.lease(), json!(1)).unwrap();
    }
    let g = env.queue.get_group(&campaign.id).unwrap();
    assert_eq!(
        (g.stage, g.progress, g.counts[&Status::Succeeded]),
        ("completed", 100.0, 4)
    );

    let failing = env.queue.create_group("doomed", None).unwrap();
    env.queue
        .enqueue(NewJob::new("k").group(&failing.id))
        .unwrap();
    env.queue
        .fail(
            &env.queue.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease(),
            &JobError::permanent("x"),
        )
        .unwrap();
    assert_eq!(env.queue.get_group(&failing.id).unwrap().stage, "failed");
}

#[test]
fn deleting_a_group_deletes_its_jobs() {
    let env = Env::new();
    let group = env.queue.create_group("batch", None).unwrap();
    let inside: Vec<_> = (0..3)
        .map(|_| {
            env.queue
                .enqueue(NewJob::new("k").group(&group.id))
                .unwrap()
                .job_id
        })
        .collect();
    let outside = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    assert_eq!(env.queue.delete_group(&group.id).unwrap(), 3);
    for id in &inside {
        assert!(env.queue.get(id).unwrap_err().is_not_found());
    }
    env.queue.get(&outside).unwrap();
    assert!(env.queue.get_group(&group.id).unwrap_err().is_not_found());
    assert!(
        env.queue
            .delete_group(&group.id)
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn a_scoped_owner_cannot_see_or_change_another_owners_jobs_or_groups() {
    let env = Env::new();
    let alice = env.queue.scoped("alice");
    let bob = env.queue.scoped("bob");
    let bobs_group = bob.create_group("bob's", None).unwrap();
    let bobs_job = bob
        .enqueue(NewJob::new("k").group(&bobs_group.id))
        .unwrap()
        .job_id;
    let bobs_failed = bob.enqueue(NewJob::new("k")).unwrap().job_id;
    let lease = bob
        .claim("w", 10, &ClaimFilter::default())
        .unwrap()
        .into_iter()
        .find(|j| j.id == bobs_failed)
        .unwrap()
        .lease();
    bob.fail(&lease, &JobError::permanent("x")).unwrap();
    let alices = alice.enqueue(NewJob::new("k")).unwrap().job_id;
    let before = env.dump();

    let not_found = |r: Result<Status, Error>| {
        let err = r.unwrap_err();
        assert!(matches!(err, Error::NotFound { what: "job", .. }), "{err}");
    };
    assert!(alice.get(&bobs_job).unwrap_err().is_not_found());
    not_found(alice.cancel(&bobs_job));
    not_found(alice.retry(&bobs_failed));
    not_found(alice.delete(&bobs_failed));
    not_found(alice.transition(&bobs_job, Status::Cancelled, None));
    assert!(alice.get_group(&bobs_group.id).unwrap_err().is_not_found());
    assert!(
        alice
            .delete_group(&bobs_group.id)
            .unwrap_err()
            .is_not_found()
    );
    let err = alice
        .enqueue(NewJob::new("k").group(&bobs_group.id))
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { what: "group", .. }),
        "{err}"
    );
    let err = alice.enqueue(NewJob::new("k").owner("bob")).unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { field: "owner", .. }),
        "{err}"
    );
    assert!(alice.get_owner("bob").unwrap_err().is_not_found());
    assert!(matches!(
        alice.create_token("alice").unwrap_err(),
        Error::Forbidden { .. }
    ));
    let listed: Vec<_> = alice
        .list(&JobFilter::new())
        .unwrap()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![alices.clone()]);
    assert!(
        alice
            .list(&JobFilter::new().owner("bob"))
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(
        alice
            .list(&JobFilter::new().group(&bobs_group.id))
            .unwrap()
            .jobs
            .is_empty()
    );
    assert_eq!(alice.list_groups(10).unwrap().len(), 0);
    assert_eq!(env.dump(), before, "nothing changed");

    // The admin handle sees and changes everything.
    assert_eq!(env.queue.list(&JobFilter::new()).unwrap().jobs.len(), 3);
    env.queue.cancel(&bobs_job).unwrap();
    env.queue.retry(&bobs_failed).unwrap();
    assert_eq!(
        env.queue.get(&alices).unwrap().owner.as_deref(),
        Some("alice")
    );
}

#[test]
fn jobs_enqueued_into_a_group_take_the_groups_owner() {
    let env = Env::new();
    let group = env.queue.scoped("carol").create_group("g", None).unwrap();
    assert_eq!(group.owner.as_deref(), Some("carol"));
    let id = env
        .queue
        .enqueue(NewJob::new("k").group(&group.id))
        .unwrap()
        .job_id;
    assert_eq!(env.queue.get(&id).unwrap().owner.as_deref(), Some("carol"));
    env.queue.scoped("carol").get(&id).unwrap();
}

#[test]
fn owners_have_budgets_and_spend() {
    let env = Env::new();
    let owner = env.queue.create_owner("dave", Some(1000)).unwrap();
    assert_eq!((owner.budget_cents, owner.spent_cents), (Some(1000), 0));
    assert!(matches!(
        env.queue.create_owner("dave", None).unwrap_err(),
        Error::Duplicate { .. }
    ));
    let dave = env.queue.scoped("dave");
    dave.enqueue(NewJob::new("k").cost_cents(400)).unwrap();
    let lease = dave.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    dave.complete_with_cost(&lease, json!(1), 150).unwrap();
    assert_eq!(dave.get_owner("dave").unwrap().spent_cents, 550);
    let err = env.queue.set_budget("dave", Some(-5)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "budget_cents",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        env.queue.set_budget("dave", None).unwrap().budget_cents,
        None
    );
}

#[test]
fn tokens_authenticate_their_owner_and_nothing_else() {
    let env = Env::new();
    let token = env.queue.create_token("erin").unwrap();
    assert!(token.starts_with("jobq_"));
    assert_eq!(
        env.queue.authenticate(&token).unwrap().as_deref(),
        Some("erin")
    );
    // The stored row holds a hash, never the token or its secret.
    let secret = token.rsplit('_').next().unwrap();
    assert!(!env.dump().contains(secret));
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('0') { '1' } else { '0' });
    for bad in [
        forged.as_str(),
        "",
        "jobq_",
        "jobq_x_y",
        "Bearer x",
        &token[..token.len() - 1],
    ] {
        assert_eq!(env.queue.authenticate(bad).unwrap(), None, "{bad:?}");
    }
    assert_eq!(env.queue.revoke_tokens("erin").unwrap(), 1);
    assert_eq!(env.queue.authenticate(&token).unwrap(), None);
}
