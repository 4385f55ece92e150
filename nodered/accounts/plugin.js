// slowctl control UI: a Dashboard 2 plugin (type 'node-red-dashboard-2') that says who is logged in.
//
// Dashboard 2 builds msg._client for every message a browser sends (a widget's send, action or
// change) when the ui-base has `includeClientData`: it first runs each plugin's
// hooks.onAddConnectionCredentials(conn, msg), then adds socketId and socketIp. Here the hook
// checks the socket's handshake credentials (HTTP Basic, the same ones settings.js let in) against
// the current users.json and replaces msg._client with {user: {username, role}}: whatever the
// browser put into _client is dropped, and a socket whose login is no longer valid (person
// removed, password changed) gets no user, so the flows refuse its commands.
//
// Loaded by Node-RED from settings.js's nodesDir (this directory is a Node-RED module).
'use strict'

module.exports = function (RED) {
    const accounts = require('./accounts.js')
    let people = null
    try {
        people = accounts.fromEnv()
        people.log = RED.log
    } catch (err) {
        RED.log.error(`slowctl-accounts: ${err.message}: dashboard messages carry no person (commands are refused)`)
    }

    RED.plugins.registerPlugin('slowctl-accounts', {
        type: 'node-red-dashboard-2',
        hooks: {
            onAddConnectionCredentials (conn, msg) {
                const person = people ? people.authenticate(conn && conn.request) : null
                msg._client = person ? { user: { username: person.login, role: person.role } } : {}
                return msg
            }
        }
    })
}
