// Package archtest holds the test that enforces the project's import rule: the HTTP
// framework (gin) is imported only by the HTTP adapters and the servers that wire them,
// and the core packages (domain, services, stores) never depend on a server or on gin.
package archtest
