// IPv4 ranges moved to the address module (agent/net/address.ts); these are its names as the lab
// still imports them. New code imports the address module.
export {
  cidrContains,
  cidrLast,
  cidrSize,
  cidrsOverlap,
  formatIPv4,
  indexInCidr,
  mustParseIPv4Cidr as mustParseCidr,
  nthAddress,
  parseIPv4,
  parseIPv4Cidr as parseCidr,
  type Ipv4Cidr as Cidr,
} from '../net/address.js';
