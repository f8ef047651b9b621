// Package actions is the centre of Gatehouse: devices, people, commands,
// events and the table of actions picked by the first word of a payload.
//
// It imports only the standard library. The adapters around it implement the
// small interfaces declared here: store implements Store, broker implements
// Publisher and calls Dispatch from its hook, web calls the Service methods.
package actions
