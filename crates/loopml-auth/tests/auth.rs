//! The auth service on SQLite (and PostgreSQL when `LOOPML_TEST_DATABASE_URL` is set): the
//! admin bootstrap, logins, throttling, grants and their combination, visibility, tokens and
//! the audit log.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use loopml_auth::{Action, AuthConfig, AuthService, Error, Permission, Visibility};
use loopml_store::testing::TestDatabase;

async fn service(db: &TestDatabase, default: Permission) -> AuthService {
    AuthService::new(
        db.database(),
        AuthConfig {
            admin_username: "admin".into(),
            admin_password: "admin-password-123".into(),
            default_permission: default,
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_grants_tokens_and_audit() {
    for db in TestDatabase::all() {
        let s = service(&db, Permission::Read).await;
        // A second start on the same store keeps the admin (no duplicate, same password).
        let s2 = service(&db, Permission::Read).await;
        let admin = s2.basic("admin", "admin-password-123").await.unwrap();
        assert!(admin.user.is_admin);

        assert!(matches!(
            s.create_user("admin", "bob", "short").await,
            Err(Error::InvalidParameter(_))
        ));
        let bob = s
            .create_user("admin", "bob", "bob-password-12")
            .await
            .unwrap();
        assert!(matches!(
            s.create_user("admin", "bob", "bob-password-12").await,
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            s.basic("bob", "wrong-password").await,
            Err(Error::Unauthenticated(_))
        ));
        let p = s.basic("bob", "bob-password-12").await.unwrap();
        assert_eq!(p.user, bob);

        // Grants: default READ, exact beats wildcard, DENY vetoes, below-default is floored.
        assert_eq!(
            s.permission(&bob, "experiment", "1").await.unwrap(),
            Permission::Read
        );
        s.grant("admin", "bob", "experiment", "*", Permission::Edit, true)
            .await
            .unwrap();
        s.grant("admin", "bob", "experiment", "2", Permission::Manage, true)
            .await
            .unwrap();
        s.grant("admin", "bob", "experiment", "3", Permission::Deny, true)
            .await
            .unwrap();
        assert_eq!(
            s.permission(&bob, "experiment", "1").await.unwrap(),
            Permission::Edit
        );
        assert_eq!(
            s.permission(&bob, "experiment", "2").await.unwrap(),
            Permission::Manage
        );
        assert_eq!(
            s.permission(&bob, "experiment", "3").await.unwrap(),
            Permission::Deny
        );
        assert!(s.check(&p, "experiment", "1", Action::Update).await.is_ok());
        assert!(matches!(
            s.check(&p, "experiment", "1", Action::Delete).await,
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            s.grant("admin", "bob", "experiment", "2", Permission::Read, true)
                .await,
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            s.grant(
                "admin",
                "bob",
                "experiment",
                "9",
                Permission::NoPermissions,
                true
            )
            .await,
            Err(Error::InvalidParameter(_))
        ));
        assert!(matches!(
            s.grant("admin", "bob", "planet", "9", Permission::Read, true)
                .await,
            Err(Error::InvalidParameter(_))
        ));
        assert_eq!(
            s.visibility(&bob, "experiment").await.unwrap(),
            Visibility::AllBut(vec!["3".into()])
        );
        assert_eq!(
            s.visibility(&admin.user, "experiment").await.unwrap(),
            Visibility::All
        );
        s.revoke("admin", "bob", "experiment", "3").await.unwrap();
        assert!(matches!(
            s.revoke("admin", "bob", "experiment", "3").await,
            Err(Error::NotFound(_))
        ));

        // Tokens: they work, are stored hashed, expire and revoke.
        let (secret, info) = s
            .create_token("bob", "bob", "ci", None, false)
            .await
            .unwrap();
        assert_eq!(s.bearer(&secret).await.unwrap().user, bob);
        let listed = s.tokens(Some("bob")).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, info.id);
        let (short, _) = s
            .create_token(
                "bob",
                "bob",
                "short",
                Some(std::time::Duration::from_millis(1)),
                true,
            )
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(matches!(
            s.bearer(&short).await,
            Err(Error::Unauthenticated(_))
        ));
        s.revoke_token("bob", &info.id).await.unwrap();
        assert!(matches!(
            s.bearer(&secret).await,
            Err(Error::Unauthenticated(_))
        ));

        // A password change invalidates the remembered login at once.
        s.update_password("admin", "bob", "bob-password-34")
            .await
            .unwrap();
        assert!(s.basic("bob", "bob-password-12").await.is_err());
        assert!(s.basic("bob", "bob-password-34").await.is_ok());

        s.delete_user("admin", "bob").await.unwrap();
        assert!(matches!(s.get_user("bob").await, Err(Error::NotFound(_))));
        let log = s.audit_log(0, 100, None).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
        for a in [
            "create_user",
            "grant",
            "revoke",
            "create_token",
            "revoke_token",
            "delete_user",
        ] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
        assert!(log.iter().all(|e| !e.detail.contains("bob-password")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_below_read_shows_only_granted_resources() {
    let db = TestDatabase::sqlite();
    let s = service(&db, Permission::NoPermissions).await;
    let u = s
        .create_user("admin", "carol", "carol-password-1")
        .await
        .unwrap();
    assert_eq!(
        s.visibility(&u, "experiment").await.unwrap(),
        Visibility::Only(vec![])
    );
    s.make_owner(&u, "experiment", "7").await.unwrap();
    assert_eq!(
        s.visibility(&u, "experiment").await.unwrap(),
        Visibility::Only(vec!["7".into()])
    );
    assert_eq!(
        s.permission(&u, "experiment", "8").await.unwrap(),
        Permission::NoPermissions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_slow_down_one_user_only() {
    let db = TestDatabase::sqlite();
    let s = service(&db, Permission::Read).await;
    s.create_user("admin", "dave", "dave-password-1")
        .await
        .unwrap();
    for _ in 0..6 {
        let _ = s.basic("dave", "wrong-password").await;
    }
    assert!(matches!(
        s.basic("dave", "dave-password-1").await,
        Err(Error::Throttled(_))
    ));
    assert!(s.basic("admin", "admin-password-123").await.is_ok());
}

#[tokio::test]
async fn start_up_refuses_a_missing_or_weak_admin_password() {
    for pw in ["", "short", "password1234"] {
        let db = TestDatabase::sqlite();
        let r = AuthService::new(
            db.database(),
            AuthConfig {
                admin_username: "admin".into(),
                admin_password: pw.into(),
                default_permission: Permission::Read,
            },
        )
        .await;
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("MLFLOW_AUTH_ADMIN_PASSWORD"), "{pw}: {e}");
    }
}

/// Two replicas on one database: a revocation or grant change made on one holds on the other
/// at once when the change bus carries the note, and within the cache's TTL without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_sees_revocations() {
    for db in TestDatabase::all() {
        let a = service(&db, Permission::Read).await;
        let b = service(&db, Permission::Read).await;
        let bus = loopml_store::ChangeBus::local();
        b.set_change_bus(bus.clone());
        let bob = a
            .create_user("admin", "bob", "bob-password-12")
            .await
            .unwrap();
        let (secret, info) = a
            .create_token("bob", "bob", "ci", None, false)
            .await
            .unwrap();
        // b reads (and remembers) the token and bob's permission.
        assert_eq!(b.bearer(&secret).await.unwrap().user, bob);
        assert_eq!(
            b.permission(&bob, "experiment", "1").await.unwrap(),
            Permission::Read
        );
        a.revoke_token("bob", &info.id).await.unwrap();
        a.grant("admin", "bob", "experiment", "1", Permission::Deny, true)
            .await
            .unwrap();
        // The note another replica's bus would deliver: b forgets at once.
        bus.notify_local("auth", 1);
        assert!(matches!(
            b.bearer(&secret).await,
            Err(Error::Unauthenticated(_))
        ));
        assert_eq!(
            b.permission(&bob, "experiment", "1").await.unwrap(),
            Permission::Deny
        );
        // Without a note: the grant lifted on a holds on b within the TTL.
        a.revoke("admin", "bob", "experiment", "1").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        assert_eq!(
            b.permission(&bob, "experiment", "1").await.unwrap(),
            Permission::Read
        );
    }
}

/// MLflow 3's roles: a role's permissions apply to every user holding it, fold with the user's
/// own grants (DENY vetoes, the highest wins), show in visibility, and end with the assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_grant_what_their_permissions_say() {
    for db in TestDatabase::all() {
        let s = service(&db, Permission::NoPermissions).await;
        let bob = s
            .create_user("admin", "bob", "bob-password-12")
            .await
            .unwrap();
        assert_eq!(
            s.permission(&bob, "experiment", "5").await.unwrap(),
            Permission::NoPermissions
        );
        let readers = s
            .create_role("admin", "default", "readers", Some("read everything"))
            .await
            .unwrap();
        assert!(matches!(
            s.create_role("admin", "default", "readers", None).await,
            Err(Error::AlreadyExists(_))
        ));
        s.add_role_permission("admin", readers.id, "experiment", "*", Permission::Read)
            .await
            .unwrap();
        assert!(matches!(
            s.add_role_permission("admin", readers.id, "run", "*", Permission::Read)
                .await,
            Err(Error::InvalidParameter(_))
        ));
        let editors = s
            .create_role("admin", "default", "editors", None)
            .await
            .unwrap();
        let edit5 = s
            .add_role_permission("admin", editors.id, "experiment", "5", Permission::Edit)
            .await
            .unwrap();
        s.assign_role("admin", "bob", readers.id).await.unwrap();
        s.assign_role("admin", "bob", editors.id).await.unwrap();
        assert!(matches!(
            s.assign_role("admin", "bob", editors.id).await,
            Err(Error::AlreadyExists(_))
        ));
        // Exact beats `*`; the highest among several wins.
        assert_eq!(
            s.permission(&bob, "experiment", "5").await.unwrap(),
            Permission::Edit
        );
        assert_eq!(
            s.permission(&bob, "experiment", "6").await.unwrap(),
            Permission::Read
        );
        s.grant("admin", "bob", "experiment", "5", Permission::Manage, true)
            .await
            .unwrap();
        assert_eq!(
            s.permission(&bob, "experiment", "5").await.unwrap(),
            Permission::Manage
        );
        // A role's DENY vetoes the user's own MANAGE.
        s.update_role_permission("admin", edit5.id, Permission::Deny)
            .await
            .unwrap();
        assert_eq!(
            s.permission(&bob, "experiment", "5").await.unwrap(),
            Permission::Deny
        );
        assert_eq!(
            s.visibility(&bob, "experiment").await.unwrap(),
            Visibility::AllBut(vec!["5".into()])
        );
        assert_eq!(s.user_roles("bob").await.unwrap().len(), 2);
        assert_eq!(s.role_users(readers.id).await.unwrap().len(), 1);
        // Unassigned, the role grants nothing; deleted, it is gone with its permissions.
        s.unassign_role("admin", "bob", readers.id).await.unwrap();
        assert_eq!(
            s.permission(&bob, "experiment", "6").await.unwrap(),
            Permission::NoPermissions
        );
        s.delete_role("admin", editors.id).await.unwrap();
        assert!(matches!(s.role(editors.id).await, Err(Error::NotFound(_))));
        assert_eq!(
            s.permission(&bob, "experiment", "5").await.unwrap(),
            Permission::Manage
        );
        let log = s.audit_log(0, 1000, None).await.unwrap();
        for action in [
            "create_role",
            "add_role_permission",
            "assign_role",
            "delete_role",
        ] {
            assert!(log.iter().any(|e| e.action == action), "{action}");
        }
    }
}
