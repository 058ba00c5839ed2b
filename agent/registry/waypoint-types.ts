// The kinds a waypoint reads, in the shape users write them for Istio and Gateway API:
// security.istio.io RequestAuthentication, gateway.networking.k8s.io Gateway and HTTPRoute,
// networking.istio.io DestinationRule and VirtualService. Field names as Istio's and Gateway API's
// references spell them. Builds on meta.ts and policy-types.ts only (types.ts gathers it).
import type { ObjectMeta } from './meta.js';
import type { PolicyTargetReference, WorkloadSelector } from './policy-types.js';

export interface JwtHeader {
  name: string;
  prefix?: string;
}

export interface JwtRule {
  issuer: string;
  audiences?: string[];
  jwksUri?: string;
  /** The inline JWK set as written (a JSON string; checked to parse as {keys: [...]}). */
  jwks?: string;
  fromHeaders?: JwtHeader[];
  fromParams?: string[];
  fromCookies?: string[];
  outputPayloadToHeader?: string;
  outputClaimToHeaders?: Array<{ header: string; claim: string }>;
  forwardOriginalToken?: boolean;
  /** Timeout of fetching jwksUri, a duration such as `5s`. */
  timeout?: string;
}

export interface RequestAuthenticationResource {
  apiVersion: 'security.istio.io/v1' | 'security.istio.io/v1beta1';
  kind: 'RequestAuthentication';
  metadata: ObjectMeta & { namespace: string };
  spec: {
    selector?: WorkloadSelector;
    targetRefs?: PolicyTargetReference[];
    jwtRules?: JwtRule[];
  };
}

/** The label naming what traffic a waypoint Gateway takes (Istio's). */
export const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
export const WAYPOINT_FOR_VALUES = ['service', 'workload', 'all', 'none'] as const;
export type WaypointFor = (typeof WAYPOINT_FOR_VALUES)[number];

export interface GatewayListener {
  name: string;
  port: number;
  protocol: string;
  hostname?: string;
}

export interface GatewayResource {
  apiVersion: 'gateway.networking.k8s.io/v1' | 'gateway.networking.k8s.io/v1beta1';
  kind: 'Gateway';
  metadata: ObjectMeta & { namespace: string };
  spec: { gatewayClassName: string; listeners: GatewayListener[] };
}

/** A parent or backend reference of a route (Gateway API ParentReference / BackendRef fields). */
export interface RouteParentRef {
  group?: string;
  kind?: string;
  name: string;
  namespace?: string;
  port?: number;
  sectionName?: string;
}

export type PathMatchType = 'Exact' | 'PathPrefix' | 'RegularExpression';
export type ValueMatchType = 'Exact' | 'RegularExpression';

export interface HTTPRouteMatch {
  /** Defaulted as Gateway API does: PathPrefix `/` when no path is given. */
  path?: { type: PathMatchType; value: string };
  headers?: Array<{ type: ValueMatchType; name: string; value: string }>;
  queryParams?: Array<{ type: ValueMatchType; name: string; value: string }>;
  method?: string;
}

export interface HeaderModifier {
  set?: Array<{ name: string; value: string }>;
  add?: Array<{ name: string; value: string }>;
  remove?: string[];
}

export interface PathModifier {
  type: 'ReplaceFullPath' | 'ReplacePrefixMatch';
  replaceFullPath?: string;
  replacePrefixMatch?: string;
}

export interface BackendRef {
  group?: string;
  kind?: string;
  name: string;
  namespace?: string;
  port?: number;
  /** 0–1,000,000; default 1. */
  weight?: number;
}

export type HTTPRouteFilter =
  | { type: 'RequestHeaderModifier'; requestHeaderModifier: HeaderModifier }
  | { type: 'ResponseHeaderModifier'; responseHeaderModifier: HeaderModifier }
  | {
      type: 'RequestRedirect';
      requestRedirect: { scheme?: 'http' | 'https'; hostname?: string; path?: PathModifier; port?: number; statusCode?: 301 | 302 | 303 | 307 | 308 };
    }
  | { type: 'RequestMirror'; requestMirror: { backendRef: BackendRef; percent?: number } }
  | { type: 'URLRewrite'; urlRewrite: { hostname?: string; path?: PathModifier } }
  | {
      type: 'CORS';
      cors: {
        allowOrigins?: string[];
        allowMethods?: string[];
        allowHeaders?: string[];
        exposeHeaders?: string[];
        allowCredentials?: boolean;
        maxAge?: number;
      };
    };

export interface HTTPRouteRule {
  name?: string;
  matches: HTTPRouteMatch[];
  filters?: HTTPRouteFilter[];
  backendRefs?: Array<BackendRef & { filters?: HTTPRouteFilter[] }>;
  timeouts?: { request?: string; backendRequest?: string };
  retry?: { attempts?: number; codes?: number[]; backoff?: string };
}

export interface HTTPRouteResource {
  apiVersion: 'gateway.networking.k8s.io/v1' | 'gateway.networking.k8s.io/v1beta1';
  kind: 'HTTPRoute';
  metadata: ObjectMeta & { namespace: string };
  spec: { parentRefs?: RouteParentRef[]; hostnames?: string[]; rules: HTTPRouteRule[] };
}

export type LoadBalancerSimple = 'UNSPECIFIED' | 'RANDOM' | 'PASSTHROUGH' | 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'LEAST_CONN';

export interface ConnectionPool {
  tcp?: { maxConnections?: number; connectTimeout?: string; maxConnectionDuration?: string; idleTimeout?: string };
  http?: {
    http1MaxPendingRequests?: number;
    http2MaxRequests?: number;
    maxRequestsPerConnection?: number;
    maxRetries?: number;
    idleTimeout?: string;
    maxConcurrentStreams?: number;
  };
}

export interface OutlierDetection {
  consecutive5xxErrors?: number;
  consecutiveGatewayErrors?: number;
  interval?: string;
  baseEjectionTime?: string;
  maxEjectionPercent?: number;
  minHealthPercent?: number;
}

export interface TrafficPolicy {
  connectionPool?: ConnectionPool;
  outlierDetection?: OutlierDetection;
  loadBalancer?: { simple: LoadBalancerSimple };
}

export interface DestinationRuleResource {
  apiVersion: 'networking.istio.io/v1' | 'networking.istio.io/v1beta1';
  kind: 'DestinationRule';
  metadata: ObjectMeta & { namespace: string };
  spec: { host: string; trafficPolicy?: TrafficPolicy; subsets?: Array<{ name: string; labels?: Record<string, string>; trafficPolicy?: TrafficPolicy }> };
}

export interface HTTPFault {
  delay?: { percentage?: { value: number }; fixedDelay: string };
  abort?: { percentage?: { value: number }; httpStatus: number };
}

export interface VirtualServiceDestination {
  host: string;
  subset?: string;
  port?: { number: number };
}

export interface VirtualServiceHTTPRoute {
  name?: string;
  fault?: HTTPFault;
  route?: Array<{ destination: VirtualServiceDestination; weight?: number }>;
  timeout?: string;
}

export interface VirtualServiceResource {
  apiVersion: 'networking.istio.io/v1' | 'networking.istio.io/v1beta1';
  kind: 'VirtualService';
  metadata: ObjectMeta & { namespace: string };
  spec: { hosts: string[]; gateways?: string[]; http?: VirtualServiceHTTPRoute[] };
}

export type WaypointResource = RequestAuthenticationResource | GatewayResource | HTTPRouteResource | DestinationRuleResource | VirtualServiceResource;
