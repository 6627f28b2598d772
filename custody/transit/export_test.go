package transit

// PublicKeyOf is parsePublic, for the tests.
var PublicKeyOf = parsePublic
