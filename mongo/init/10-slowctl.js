// First start of the mongo container (empty data volume), run by mongosh as the root user:
// the slowctl database and its least-privilege user (readWrite on that database, nothing else).
const dbName = process.env.MONGO_INITDB_DATABASE;
const user = process.env.MONGO_USER;
const pwd = process.env.MONGO_PASSWORD;
if (!dbName || !user || !pwd) {
  throw new Error("MONGO_INITDB_DATABASE, MONGO_USER and MONGO_PASSWORD must be set: run `slowctl init`");
}
const slowctl = db.getSiblingDB(dbName);
slowctl.createUser({user: user, pwd: pwd, roles: [{role: "readWrite", db: dbName}]});
// collections exist from the start, so the database does too
slowctl.createCollection("commands");          // command audit trail (the recorder; docs/records.md)
slowctl.createCollection("events");            // the event stream (the recorder)
slowctl.createCollection("procedures");        // one document per procedure run (the procedure runner; docs/procedures.md)
slowctl.createCollection("procedure_points");  // the data points of the runs
// their indexes: made by the recorder, the procedure runner and `slowctl db-check` (the mongo-check service)
