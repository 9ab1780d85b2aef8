package httpapi

// CodeForStatus lets the external tests check the code of answers made from a status.
var CodeForStatus = codeForStatus
