//! `weir_bench resume`: how long a client waits for a reply it resumes.
//!
//! Per runtime and per place (`one`: the node that produced the reply, on
//! the in-memory store; `cross`: another node than the producer, both on one
//! real `redis-server`): one client chats and reads a demo reply of M chunks
//! to its end, so the whole reply is stored. Then, one after the other, R
//! fresh connections open `/v1/ws?…&resume=MESSAGE_ID:0` and read the replay
//! to its `end`. Per resume: the time from the start of the connect (TCP,
//! WebSocket handshake, `hello`, `history`) to the first `chunk` frame, and
//! to the frame carrying the last chunk; the number of `chunk` frames the
//! replay took (a merged frame carries `from_seq..=seq`); and whether the
//! replay was exact (every chunk once, in order, the text equal to what the
//! producer's client read). On Redis, the commands Redis processed per
//! resume (`INFO stats`).

use std::path::Path;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use weir_bench::{percentile, Runtime};
use weir_tests::RedisServer;

use crate::client::{connect, source_ip, Ws};
use crate::server::{runtime_name, Server};
use crate::setup::Env;
use crate::{Cli, Res};

/// Target of issue 16: the first replayed chunk of a 1 000-chunk reply.
const TARGET_FIRST_P99_MS: f64 = 25.0;
/// How long one frame may take to come.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Place {
    /// The producing node, in-memory store.
    One,
    /// Another node than the producer, both on one redis-server.
    Cross,
    /// `one`, then `cross`.
    Both,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// Resumes measured per runtime and place (one after the other)
    #[arg(long, default_value_t = 200)]
    pub(crate) resumes: usize,
    /// Chunks of the stored reply
    #[arg(long, default_value_t = 1_000)]
    chunks: u32,
    /// Where the resuming clients connect
    #[arg(long, value_enum, default_value_t = Place::Both)]
    place: Place,
}

#[derive(Debug, Default)]
struct Run {
    place: &'static str,
    runtime: Option<Runtime>,
    resumes: usize,
    exact: usize,
    inexact: usize,
    unavailable: usize,
    /// Connect start → first chunk frame, and → the last chunk, in ns.
    first: Vec<u64>,
    last: Vec<u64>,
    frames: usize,
    redis_commands: Option<u64>,
    /// Calls per command name during the resumes, most first.
    redis_calls: Vec<(String, u64)>,
}

impl Run {
    fn ms(v: &[u64], p: f64) -> Option<f64> {
        percentile(v, p).map(|ns| ns as f64 / 1e6)
    }

    fn frames_per_resume(&self) -> f64 {
        self.frames as f64 / self.resumes.max(1) as f64
    }

    fn commands_per_resume(&self) -> Option<f64> {
        self.redis_commands
            .map(|c| c as f64 / self.resumes.max(1) as f64)
    }
}

pub(crate) async fn resume(cli: &Cli, args: &ResumeArgs, weir: &Path, env: &Env) -> Res<()> {
    env.print("resume");
    println!(
        "params    a stored reply of {} chunks (demo generator) · {} resumes from seq 0 per runtime and place, \
         one after the other · places: {} · weir: --grace 600 (the resume window), --log error",
        args.chunks,
        args.resumes,
        match args.place {
            Place::One => "one (the producing node, in-memory store)",
            Place::Cross => "cross (another node, both on one redis-server)",
            Place::Both => "one (the producing node, in-memory store), cross (another node, both on one redis-server)",
        }
    );
    println!();
    let mut runs = Vec::new();
    for &runtime in cli.rt.runtimes() {
        let rt_args = cli.rt.weir_args(runtime);
        let mut extra: Vec<String> = [
            "--demo-chunks",
            &args.chunks.to_string(),
            "--demo-rate",
            "1000000",
            "--grace",
            "600",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if args.place != Place::Cross {
            let a = Server::weir(weir, &rt_args, &extra).await?;
            let run = measure(cli, args, "one", runtime, &a, &a, None).await?;
            a.stop().await;
            runs.push(run);
        }
        if args.place != Place::One {
            let redis = RedisServer::start();
            extra.extend(["--store".to_owned(), redis.url()]);
            let a = Server::weir_node(weir, &rt_args, "a", &extra).await?;
            let b = Server::weir_node(weir, &rt_args, "b", &extra).await?;
            let run = measure(cli, args, "cross", runtime, &a, &b, Some(&redis)).await?;
            a.stop().await;
            b.stop().await;
            runs.push(run);
        }
    }
    report(cli, args, env, &runs);
    Ok(())
}

/// The reply's text as one client read it live, and its id.
async fn produce(cli: &Cli, producer: &Server) -> Res<(String, String, u64)> {
    let path = "/v1/ws?session_id=resume&user_id=u";
    let mut ws = connect(producer.addr, source_ip(0, cli.source_ips), path, true).await?;
    let chat = json!({"type": "chat", "content": "resume me", "request_id": "r1"});
    ws.send(Message::text(chat.to_string())).await?;
    let mut text = String::new();
    loop {
        let v = next_json(&mut ws).await?;
        match v["type"].as_str() {
            Some("chunk") => text.push_str(v["delta"].as_str().unwrap_or_default()),
            Some("end") => {
                let mid = v["message_id"].as_str().unwrap_or_default().to_owned();
                let final_seq = v["final_seq"].as_u64().unwrap_or(0);
                if v["status"] != "completed" {
                    return Err(format!("the stored reply ended {v}").into());
                }
                let _ = ws.close(None).await;
                return Ok((mid, text, final_seq));
            }
            Some("error") => return Err(format!("chat answered {v}").into()),
            _ => {}
        }
    }
}

async fn next_json(ws: &mut Ws) -> Res<Value> {
    loop {
        match timeout(FRAME_TIMEOUT, ws.next()).await {
            Err(_) => return Err("no frame within 10 s".into()),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(t.as_str())?),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => return Err("closed".into()),
        }
    }
}

/// What one resume saw.
enum Outcome {
    Exact {
        first: u64,
        last: u64,
        frames: usize,
    },
    Inexact(String),
    Unavailable,
}

async fn one_resume(
    cli: &Cli,
    i: usize,
    target: &Server,
    (mid, text, final_seq): (&str, &str, u64),
) -> Res<Outcome> {
    let path = format!("/v1/ws?session_id=resume&user_id=u&resume={mid}:0");
    let started = Instant::now();
    let mut ws = connect(target.addr, source_ip(i, cli.source_ips), &path, true).await?;
    let (mut got, mut next, mut frames) = (String::new(), 1_u64, 0_usize);
    let (mut first, mut last) = (None, None);
    let outcome = loop {
        let v = next_json(&mut ws).await?;
        let at = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match v["type"].as_str() {
            Some("chunk") => {
                frames += 1;
                first.get_or_insert(at);
                let seq = v["seq"].as_u64().unwrap_or(0);
                let from = v["from_seq"].as_u64().unwrap_or(seq);
                if from != next || seq < from {
                    break Outcome::Inexact(format!("expected chunk {next}, got {from}..={seq}"));
                }
                next = seq + 1;
                got.push_str(v["delta"].as_str().unwrap_or_default());
                if seq == final_seq {
                    last = Some(at);
                }
            }
            Some("end") => {
                break match (first, last) {
                    (Some(first), Some(last)) if got == text && next == final_seq + 1 => {
                        Outcome::Exact {
                            first,
                            last,
                            frames,
                        }
                    }
                    _ => Outcome::Inexact(format!(
                        "ended after chunk {}; text equal: {}",
                        next - 1,
                        got == text
                    )),
                };
            }
            Some("resume_unavailable") => break Outcome::Unavailable,
            Some("error") => break Outcome::Inexact(format!("error frame {v}")),
            _ => {}
        }
    };
    let _ = ws.close(None).await;
    Ok(outcome)
}

async fn measure(
    cli: &Cli,
    args: &ResumeArgs,
    place: &'static str,
    runtime: Runtime,
    producer: &Server,
    target: &Server,
    redis: Option<&RedisServer>,
) -> Res<Run> {
    let (mid, text, final_seq) = produce(cli, producer).await?;
    let mut run = Run {
        place,
        runtime: Some(runtime),
        resumes: args.resumes,
        ..Run::default()
    };
    let commands_before = redis.map(commands_processed);
    let calls_before = redis.map(command_calls).unwrap_or_default();
    let mut first_problem = None;
    for i in 0..args.resumes {
        match one_resume(cli, i, target, (&mid, &text, final_seq)).await? {
            Outcome::Exact {
                first,
                last,
                frames,
            } => {
                run.exact += 1;
                run.first.push(first);
                run.last.push(last);
                run.frames += frames;
            }
            Outcome::Inexact(why) => {
                run.inexact += 1;
                first_problem.get_or_insert(why);
            }
            Outcome::Unavailable => run.unavailable += 1,
        }
    }
    if let (Some(r), Some(before)) = (redis, commands_before) {
        // The INFO command itself is one of them.
        run.redis_commands = Some(commands_processed(r).saturating_sub(before + 2));
        let mut calls: Vec<(String, u64)> = command_calls(r)
            .into_iter()
            .map(|(name, n)| {
                let was = calls_before
                    .iter()
                    .find(|(b, _)| *b == name)
                    .map_or(0, |b| b.1);
                (name, n.saturating_sub(was))
            })
            .filter(|(name, n)| *n > 0 && name != "info")
            .collect();
        calls.sort_by_key(|c| std::cmp::Reverse(c.1));
        run.redis_calls = calls;
    }
    run.first.sort_unstable();
    run.last.sort_unstable();
    println!(
        "{place:<6} {:<7} {}/{} exact · {} inexact · {} unavailable · first chunk p50 {:.2} ms · last chunk p50 {:.2} ms · \
         {:.1} frames per resume · load average {}{}{}",
        runtime.name(),
        run.exact,
        run.resumes,
        run.inexact,
        run.unavailable,
        Run::ms(&run.first, 50.0).unwrap_or(f64::NAN),
        Run::ms(&run.last, 50.0).unwrap_or(f64::NAN),
        run.frames_per_resume(),
        weir_bench::load_average(),
        if run.redis_calls.is_empty() {
            String::new()
        } else {
            format!(
                " · Redis calls per resume: {}",
                run.redis_calls
                    .iter()
                    .map(|(n, c)| format!("{n} {:.1}", *c as f64 / run.resumes.max(1) as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        first_problem
            .map(|p| format!(" · first problem: {p}"))
            .unwrap_or_default()
    );
    Ok(run)
}

/// Calls per command of `INFO commandstats` (`cmdstat_NAME:calls=N,…`).
fn command_calls(redis: &RedisServer) -> Vec<(String, u64)> {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// `total_commands_processed` of `INFO stats`.
fn commands_processed(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn report(cli: &Cli, args: &ResumeArgs, env: &Env, runs: &[Run]) {
    println!();
    println!(
        "{:<6} {:<7} {:>9} {:>11} {:>11} {:>11} {:>11} {:>12} {:>13}",
        "place",
        "runtime",
        "exact",
        "first p50",
        "first p99",
        "last p50",
        "last p99",
        "frames/res.",
        "Redis cmd/res."
    );
    let fmt = |v: Option<f64>| v.map_or_else(|| String::from("-"), |v| format!("{v:.2} ms"));
    for r in runs {
        println!(
            "{:<6} {:<7} {:>9} {:>11} {:>11} {:>11} {:>11} {:>12.1} {:>13}",
            r.place,
            runtime_name(r.runtime),
            format!("{}/{}", r.exact, r.resumes),
            fmt(Run::ms(&r.first, 50.0)),
            fmt(Run::ms(&r.first, 99.0)),
            fmt(Run::ms(&r.last, 50.0)),
            fmt(Run::ms(&r.last, 99.0)),
            r.frames_per_resume(),
            r.commands_per_resume()
                .map_or_else(|| String::from("-"), |c| format!("{c:.1}"))
        );
    }
    println!();
    let mut all_met = true;
    for r in runs {
        let p99 = Run::ms(&r.first, 99.0);
        let met = r.exact == r.resumes && p99.is_some_and(|v| v <= TARGET_FIRST_P99_MS);
        all_met &= met;
        println!(
            "target    resume of {} stored chunks ({}, {}): first chunk p99 ≤ {TARGET_FIRST_P99_MS} ms, every \
             resume exact: {} , {}/{} exact → {}",
            args.chunks,
            r.place,
            runtime_name(r.runtime),
            fmt(p99),
            r.exact,
            r.resumes,
            if met { "met" } else { "NOT met" }
        );
    }
    let params = json!({
        "resumes": args.resumes,
        "chunks": args.chunks,
        "place": format!("{:?}", args.place).to_lowercase(),
    });
    let mut out = env.result_json("resume", &cli.rt, params);
    out["results"] = runs
        .iter()
        .map(|r| {
            json!({
                "place": r.place,
                "runtime": r.runtime.map(Runtime::name),
                "resumes": r.resumes,
                "exact": r.exact,
                "inexact": r.inexact,
                "unavailable": r.unavailable,
                "first_chunk_p50_ms": Run::ms(&r.first, 50.0),
                "first_chunk_p99_ms": Run::ms(&r.first, 99.0),
                "first_chunk_max_ms": Run::ms(&r.first, 100.0),
                "last_chunk_p50_ms": Run::ms(&r.last, 50.0),
                "last_chunk_p99_ms": Run::ms(&r.last, 99.0),
                "last_chunk_max_ms": Run::ms(&r.last, 100.0),
                "frames_per_resume": r.frames_per_resume(),
                "redis_commands_per_resume": r.commands_per_resume(),
                "redis_calls": r.redis_calls.iter().map(|(n, c)| json!([n, c])).collect::<Vec<_>>(),
            })
        })
        .collect();
    out["target_met"] = json!(all_met);
    println!("{out}");
}
