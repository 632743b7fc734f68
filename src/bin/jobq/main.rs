//! The `jobq` command line.

fn main() {
    let db = std::env::var("JOBQ_DB").unwrap_or_else(|_| "jobq.db".into());
    match jobq::Queue::open(&db) {
        Ok(_) => println!("jobq schema version {} at {db}", jobq::schema_version()),
        Err(e) => {
            eprintln!("jobq: {e}");
            std::process::exit(1);
        }
    }
}
