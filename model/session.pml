/*
 * spoollock: one helper session (helper/src/session/), checked by spin.
 * See model/README.md, "The session model".
 *
 * Processes: the client (any sequence of requests, half frames, garbage,
 * end of file, or silence), the helper session (killed at any step by
 * Env), and the rest of the world (Other: another locker of the same
 * name, and time for the locks nobody refreshes). The spool is one lock
 * name: free, this session's lock (it names the helper), a lock this
 * session granted detached, or the other locker's. The audit channel may
 * fail at every checked send.
 *
 * Time is counted only for the session lock, in half refresh periods
 * since its last refresh: a poll times out when the refresh is due (one
 * period, T, after the last one; with OLD_REFRESH one period after the
 * poll began), input that arrives before the timeout is rounded down (0
 * or 1), the stale age
 * is 5 periods (S; the period is stale age / 5, at most 60 s: exactly 5
 * periods for 300 s, the least stale age a client may ask for, more for
 * longer ones).
 */

#ifndef MAXREQ
#define MAXREQ 3        /* requests (and half frames) the client sends */
#endif
#define QSZ 1           /* frames the pipe holds unread */
#define MAXREF 2        /* MAX_REFUSED_PER_SESSION (16), scaled down */
#define MAXGR 2         /* MAX_GRANTED_PER_SESSION (16), scaled down */
#define T 2             /* refresh period */
#define S 10            /* stale age */

/* LOCK_S: a session lock, waiting for ever (WaitSpec::Forever); LOCK_D:
 * a detached lock, waiting a while at most (NoWait, Retries, TimeoutMs:
 * it may give up at any pause). */
mtype = { LOCK_S, LOCK_D, TOUCH, UNLOCK, CHECK, BYE, GARBAGE, PART, EOFM };

#define FREE 0
#define SESS 1          /* this session's lock: names the helper */
#define DET  2          /* granted detached by this session */
#define OTH  3          /* another locker's (another session of the caller) */

chan req = [QSZ] of { mtype };
bool eof;               /* the client closed its pipe */
byte lk = FREE;         /* what the lock name names */
byte lkage;             /* SESS: half periods since its last refresh */
bool ostale;            /* DET, OTH: stale (by age, or its holder is dead) */
bool killed;            /* the helper got SIGKILL */
bool hexit;             /* the helper returned from `serve` */
bool deadtemp;          /* a dead temporary file of the caller's (a killed session's) */

/* Ghosts: an intent record sent (and checked) and not yet used by its
 * change. Each change asserts its own and uses it up. */
bool ann_lock, ann_break, ann_rel, ann_clean;
bool endfail;           /* end: the release's intent failed, the lock was left */

#define hdead (killed || hexit)
#define stale(x) ((x == SESS && (hdead || lkage >= S)) || ((x == DET || x == OTH) && ostale))
#define older(k) lkage = (lkage + k < S -> lkage + k : S)

/* `intend`: the record of intent, `record_checked`; false when it could
 * not be sent.
 * @ helper/src/session/mod.rs:64-70 intend "record_checked(Class::Intent, op" */
inline intend(ann, ok) {
  if
  :: ann = true; ok = true
  :: ok = false
  fi
}

/* The caller's dead temporary files, each removed after its intent; the
 * sweep stops at the first intent not sent (`done` false: the spool is
 * swept again at the next lock).
 * @ helper/src/session/handlers.rs:236-256 sweep "sweep::Step::Intent if intend(&self.audit" */
inline sweep(done) {
  if
  :: deadtemp ->
     intend(ann_clean, ok);
     if
     :: ok -> atomic { assert(ann_clean); ann_clean = false; deadtemp = false }; done = true
     :: else -> done = false
     fi
  :: else -> done = true
  fi
}

active proctype Helper() {
  bool held;            /* Some(held): this session's lock */
  bool lost;            /* lost: removed by someone else */
  bool swept, sweptnow, partial, ok, detached, forever, brk;
  byte granted, refused;
  mtype m;

  {
  /* A dead temporary file left by an earlier session, or none. */
  if
  :: deadtemp = true
  :: skip
  fi;
loop:
  /* Property 1: while the session runs, a lock naming it is the one it
   * holds (and refreshes), never one it forgot. */
  assert(lk != SESS || held);
#ifndef OLD_REFRESH
  /* `refresh_if_due` before each request: by the clock, a period after
   * the last refresh, whatever the client does.
   * @ helper/src/session/mod.rs:210-214 serve "self.refresh_if_due();"
   * @ helper/src/session/mod.rs:342-350 refresh_if_due "if since < held.period()" */
#ifndef MUT_NO_REFRESH
  if
  :: held && lk == SESS && lkage >= T -> lkage = 0
  :: else
  fi;
#endif
#endif
  /* `wait_for_request`: poll the client's pipe; while a lock is held,
   * time out when its refresh is due (a period after the last one; with
   * OLD_REFRESH, as the code was: a whole period after each poll began).
   * @ helper/src/session/mod.rs:303-322 wait_for_request "let Some(due_in) = self.refresh_if_due() else {" */
end_poll:
  if
  :: len(req) > 0 || eof ->
     /* Input came before the timeout: some time passed, less than what
      * was left of the period (OLD_REFRESH: less than a period). */
     if
#ifdef OLD_REFRESH
     :: held && lk == SESS -> older(1)
#else
     :: held && lk == SESS && lkage + 1 < T -> older(1)
#endif
     :: true
     fi;
     /* Property 4: a held lock never goes stale while its session runs. */
     assert(!(held && lk == SESS && lkage >= S))
  :: held && len(req) == 0 && !eof ->
     /* The poll timed out: the refresh is due; `refresh`.
      * @ helper/src/session/mod.rs:329-331 wait_for_request "self.refresh_if_due();"
      * @ helper/src/session/mod.rs:354-373 refresh "if e == LockError::NotOurs {" */
#ifdef OLD_REFRESH
     older(T);
#else
     /* time passes until the refresh is due: the next whole period */
     if :: lk == SESS -> older(T - (lkage % T)) :: else fi;
#endif
     assert(!(lk == SESS && lkage >= S));
#ifndef MUT_NO_REFRESH
     if
     :: lk == SESS -> lkage = 0        /* futimens; is_held: ours */
     :: else -> held = false; lost = true  /* NotOurs: lost, detached */
     fi;
#endif
     goto loop
  fi;
  /* `fill`, then `read_frame`: a frame is decoded only once whole.
   * @ helper/src/session/mod.rs:218-237 serve "Err(CodecError::Closed) => return self.end(" */
  if
  :: len(req) > 0 -> req?m
  :: len(req) == 0 && eof -> m = EOFM
  fi;
  if
  :: m == PART -> partial = true; goto loop     /* half a frame: wait for the rest */
  :: m == EOFM && partial -> goto badframe       /* the pipe ended inside a frame */
  :: m == EOFM && !partial -> goto finish        /* end("eof") */
  :: m == GARBAGE -> goto badframe
  :: else -> partial = false                      /* the rest of the frame came */
  fi;

  /* `dispatch`: the session limits first.
   * @ helper/src/session/mod.rs:429-434 dispatch "let over = refused >= MAX_REFUSED_PER_SESSION" */
  if
  :: m != BYE && (refused >= MAXREF ||
       ((m == LOCK_S || m == LOCK_D) && granted >= MAXGR)) ->
     goto finish                                  /* over_limit: end("session-limit") */
  :: else
  fi;

  if
  :: m == LOCK_S || m == LOCK_D ->
     /* @ helper/src/session/handlers.rs:129-131 lock "return Err(Refusal::AlreadyLocked);" */
     if
     :: held -> refused++
     :: else ->
        detached = (m == LOCK_D);
        forever = (m == LOCK_S);
        /* @ helper/src/session/handlers.rs:209-217 sweep_before_lock "if self.swept.contains(&index) {" */
        if
        :: !swept -> sweep(swept); sweptnow = true
        :: else -> sweptnow = false
        fi;
        brk = false;
        /* @ helper/src/session/handlers.rs:147-151 lock "self.broke_stale.store(false, Ordering::Relaxed);" */
        intend(ann_lock, ok);
        if
        :: !ok -> refused++                       /* AuditUnavailable */
        :: ok ->
           /* `acquire` (lockfile), as the helper uses it: MoveAside, the
            * session's Journal announcing every break. */
acq:       if
           :: atomic { lk == FREE ->              /* link: the lock is taken */
                assert(ann_lock); ann_lock = false;
                lkage = 0; ostale = false;
                if
                :: detached -> lk = DET          /* `lock.detach()` */
                :: else -> lk = SESS; held = true; lost = false
                fi;
                granted++ }
           :: lk != FREE && stale(lk) ->
              /* Break: `BreakRecords::before_break` first.
               * @ helper/src/session/handlers.rs:41-47 before_break "intend(&self.audit, " */
              intend(ann_break, ok);
              if
              :: !ok -> ann_lock = false; refused++   /* Vetoed: AuditUnavailable */
              :: ok ->
                 /* Move aside, compare, remove (or put back). */
                 atomic {
                   assert(ann_break); ann_break = false;
                   if
                   :: lk != FREE && stale(lk) -> lk = FREE; brk = true
                   :: else                          /* vanished, or put back */
                   fi };
                 goto acq
              fi
           :: lk != FREE && !stale(lk) ->
              if
              :: !forever -> ann_lock = false; refused++   /* Busy */
              :: true ->
                 /* `Waiter::sleep`: until the lock name changes, the
                  * pause ends, or the client's pipe is readable (data or
                  * end of file).
                  * @ lockfile/src/wait.rs:200-244 sleep "if interrupt_ready {" */
end_wait:        if
#ifndef MUT_WAIT_IGNORES_EOF
                 :: len(req) > 0 || eof ->
#else
                 :: len(req) > 0 ->
#endif
                    ann_lock = false; refused++   /* Interrupted: Cancelled */
                 :: lk == FREE || stale(lk) -> goto acq
                 :: !forever -> ann_lock = false; refused++   /* Retries or a deadline: Busy, Timeout */
                 fi
              fi
           fi;
           /* Again after a break, unless this request swept before it.
            * @ helper/src/session/handlers.rs:153-155 lock "if !swept_now {" */
           if
           :: brk && !sweptnow -> sweep(ok)
           :: else
           fi
        fi
     fi
  :: m == TOUCH ->
     /* @ helper/src/session/handlers.rs:265-276 touch "Err(LockError::NotOurs) => {" */
     if
     :: held && lk == SESS -> lkage = 0
     :: held && lk != SESS -> held = false; lost = true; refused++   /* LockLost */
     :: !held && lost -> refused++
     :: !held && !lost ->
        /* By name: refreshing is no change that needs an intent. */
        if
        :: lk == DET -> ostale = false
        :: else -> refused++        /* NotLocked, or HeldBySession */
        fi
     fi
  :: m == UNLOCK ->
     if
     :: held ->
        /* @ helper/src/session/handlers.rs:308-321 unlock "if !intend(&self.audit, " */
        intend(ann_rel, ok);
        if
        :: !ok -> refused++                 /* AuditUnavailable; still held */
        :: ok ->
           held = false;
           /* Release (MoveAside): move aside, compare, remove or put back. */
           atomic {
             assert(ann_rel); ann_rel = false;
             if
             :: lk == SESS -> lk = FREE
             :: else -> refused++          /* LockLost */
             fi }
        fi
     :: !held && lost -> lost = false; refused++   /* LockLost */
     :: !held && !lost ->
        /* By name: the guard keeps it off another live session's lock.
         * @ helper/src/session/handlers.rs:326-340 unlock "remove_by_name(&dir, name.as_ref(), &opts, |content, owner| {" */
        if
        :: lk == FREE -> refused++          /* NotLocked */
        :: else ->
           intend(ann_rel, ok);
           if
           :: !ok -> refused++
           :: ok ->
              atomic {
                assert(ann_rel); ann_rel = false;
                if
                :: lk == DET -> lk = FREE
                :: else -> refused++        /* HeldBySession, NotOurs, NotLocked */
                fi }
           fi
        fi
     fi
  :: m == CHECK -> skip                      /* the caller's rights only: no change */
  :: m == BYE -> goto finish                 /* end("bye") */
  fi;
  /* Nothing of this request is kept (dead variables). */
  d_step { m = 0; ok = false; detached = false; forever = false; brk = false;
           refused = (refused > MAXREF -> MAXREF : refused) };
  goto loop;

badframe:
  /* @ helper/src/session/mod.rs:375-381 bad_frame "let refusal = Refusal::BadFrame(problem);" */
  skip;
finish:
  /* `end`: release the session lock, if any, after its intent; without
   * the intent it is left, naming this helper, which is about to exit.
   * @ helper/src/session/mod.rs:353-377 end "held.lock.detach();" */
  if
  :: held ->
     held = false;
#ifdef MUT_RELEASE_FIRST
     /* (s1) the change before its intent */
     atomic { if :: lk == SESS -> lk = FREE :: else fi; assert(ann_rel) };
     intend(ann_rel, ok);
     ann_rel = false;
#else
     intend(ann_rel, ok);
     if
     :: !ok -> endfail = true
     :: ok ->
        atomic {
          assert(ann_rel); ann_rel = false;
#ifndef MUT_NO_RELEASE_AT_EOF
          if :: lk == SESS -> lk = FREE :: else fi
#else
          /* (s2) end of file leaves the lock */
          if :: lk == SESS && m != EOFM -> lk = FREE :: else fi
#endif
        }
     fi;
#endif
  :: else
  fi;
  atomic {
    hexit = true;
    /* Properties 1 and 3: once the session is over, no lock names it,
     * unless the release could not be announced (it then names a dead
     * process: stale). */
    assert(lk != SESS || endfail)
  }
  } unless { killed }
}

/* The client: any requests, half frames and garbage, then end of file or
 * silence. With TRICKLE, also half-frame bytes and `Check` requests
 * without bound: a client that is never quiet for a whole period. */
active proctype Client() {
  byte n;
  mtype m;
end_c:
  do
  :: atomic { n < MAXREQ && len(req) < QSZ ->
       n++;
       if
       :: m = LOCK_S :: m = LOCK_D
       :: m = TOUCH :: m = UNLOCK :: m = CHECK :: m = BYE
       :: m = GARBAGE
#ifndef TRICKLE
       :: m = PART
#endif
       fi;
       req!m; m = 0 }
#ifdef TRICKLE
  :: atomic { len(req) < QSZ -> req!PART }
  :: atomic { len(req) < QSZ -> req!CHECK }
#endif
  :: eof = true; break
  :: break                       /* silent, the pipe open */
  od
}

/* Another locker of the caller's lock name (another helper session):
 * takes it when free, breaks it when stale, releases it, or keeps it
 * for ever; removes this session's lock with a forced unlock by name (the
 * one way a live session's lock is lost here). And time: locks nobody
 * refreshes go stale (a detached lock, the other's when its holder died
 * or stopped; the session lock's age is counted). Or the world goes quiet
 * for good. */
active proctype Other() {
end_o:
  do
  :: atomic { lk == FREE -> lk = OTH; ostale = false }
  :: atomic { lk != FREE && lk != OTH && stale(lk) -> lk = OTH; ostale = false }
  :: atomic { lk == OTH -> lk = FREE }
  :: atomic { lk == SESS -> lk = FREE }  /* a forced unlock by name */
  :: atomic { (lk == DET || lk == OTH) && !ostale -> ostale = true }
  :: break
  od
}

/* Locks nobody refreshes go stale: a detached lock, another locker's
 * whose holder died or stopped. (The session lock's age is counted.) */

/* SIGKILL, at most once, at any step. */
active proctype Env() {
end_e:
  if
  :: killed = true
  :: skip
  fi
}

/* Property 3: when nothing can move any more, the helper is gone or has
 * nothing to read (it never hangs after end of file or a request). */
active proctype Watch() {
end_w:
  timeout -> assert(hdead || (len(req) == 0 && !eof))
}
